using System.Text.Json;
using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Text;
using VisualChat.Training.Distributed;

namespace VisualChat.Training;

/// <summary>
/// Tokenized texts for causal-LM training: every token is a label (no prompt masking). Batch order per epoch comes
/// from <see cref="BatchPlanner"/> (shuffled under (seed, epoch)), so a resumed run sees exactly the same batches.
/// </summary>
public sealed class TextLmData(IReadOnlyList<TokenizedSample> train, IReadOnlyList<TokenizedSample> eval, int batchSize, int evalBatchSize, long seed, Collator collator)
    : ITrainingData<TrainingBatch>, ISkippedSamples
{
    /// <summary>Records skipped while reading ("file:line: reason").</summary>
    public IReadOnlyList<string> Skipped { get; init; } = [];
    IReadOnlyCollection<string> ISkippedSamples.SkippedSamples => Skipped;
    int ISkippedSamples.EmptyTrainBatches => _emptyTrainBatches;
    int _emptyTrainBatches;

    /// <summary>This rank's part of every global batch (distributed training); the whole data otherwise.</summary>
    public DataShard Shard { get; init; } = DataShard.Whole;

    public IReadOnlyList<TokenizedSample> Train { get; } = train;
    public IReadOnlyList<TokenizedSample> Eval { get; } = eval;
    public bool HasEval => Eval.Count > 0;

    int GlobalBatch => batchSize * Shard.Count;

    IReadOnlyList<int[]> Plan(int epoch) => BatchPlanner.Plan(Train.Select(s => s.Length).ToArray(), GlobalBatch, seed, epoch, shuffle: true);

    public int BatchesPerEpoch(int epoch) => (Train.Count + GlobalBatch - 1) / GlobalBatch;

    public IEnumerable<TrainingBatch> TrainBatches(int epoch, int skip, CancellationToken cancellationToken)
    {
        foreach (var global in Plan(epoch).Skip(skip))
        {
            cancellationToken.ThrowIfCancellationRequested();
            var indices = Shard.Slice(global, batchSize);
            if (indices.Length == 0) { _emptyTrainBatches++; continue; }
            yield return collator.Collate(indices.Select(i => Train[i]).ToList());
        }
    }

    public IEnumerable<TrainingBatch> EvalBatches(CancellationToken cancellationToken)
    {
        int index = 0;
        foreach (var chunk in Eval.Chunk(evalBatchSize))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (Shard.OwnsEvalBatch(index++)) yield return collator.Collate(chunk);
        }
    }

    /// <summary>A sample whose labels are its ids (BOS excluded from the loss, as the first token is never predicted).</summary>
    public static TokenizedSample Sample(int[] ids, string file, string record)
    {
        var conversation = new Conversation("text", [Round.TextOnly("", null)], [new SourceId(file, record)]);
        return new TokenizedSample(ids, (int[])ids.Clone(), [], [], conversation);
    }

    /// <summary>
    /// Reads a JSONL file whose records have a <c>text</c> string; each becomes BOS + tokens + EOS, cut to
    /// <paramref name="maxSeqLen"/>. A line that is not JSON or has no text is skipped and added to
    /// <paramref name="skipped"/> as "file:line: reason" (without that list it is an error naming the line);
    /// <paramref name="recordsRead"/> gets the number of non-blank lines.
    /// </summary>
    public static List<TokenizedSample> ReadJsonl(string path, ITokenizer tokenizer, int maxSeqLen, List<string>? skipped = null, Action<int>? recordsRead = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Training text file '{path}' does not exist.", path);
        var samples = new List<TokenizedSample>();
        int lineNumber = 0, records = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            records++;
            string? text, problem = null;
            try
            {
                using var doc = JsonDocument.Parse(line);
                text = doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
                if (text is null) problem = "expected an object with a \"text\" string";
            }
            catch (JsonException e)
            {
                text = null;
                problem = $"not valid JSON ({e.Message})";
            }
            if (problem is not null)
            {
                if (skipped is null) throw new InvalidDataException($"{path}:{lineNumber}: {problem}.");
                skipped.Add($"{path}:{lineNumber}: {problem}");
                continue;
            }
            var ids = tokenizer.Encode(text!, addBos: true, addEos: true).Take(maxSeqLen).ToArray();
            if (ids.Length < 2) continue;
            samples.Add(Sample(ids, path, lineNumber.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
        recordsRead?.Invoke(records);
        if (samples.Count == 0) throw new InvalidDataException($"{path} holds no text records with at least 2 tokens.");
        return samples;
    }

    /// <summary>Splits off a deterministic eval fraction (by hash of each sample's position).</summary>
    public static (List<TokenizedSample> Train, List<TokenizedSample> Eval) Split(IReadOnlyList<TokenizedSample> samples, double evalFraction, long seed)
    {
        var train = new List<TokenizedSample>();
        var eval = new List<TokenizedSample>();
        for (int i = 0; i < samples.Count; i++)
            (StableRandom.UnitHash(seed, "eval-split", i) < evalFraction ? eval : train).Add(samples[i]);
        if (train.Count == 0) { train.AddRange(eval); eval.Clear(); }
        return (train, eval);
    }
}
