using System.Collections.Concurrent;
using System.Security.Cryptography;
using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Training.Distributed;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Training;

/// <summary>
/// Conversations → batches with pixels. Images are decoded and preprocessed on worker threads by the bounded
/// prefetcher, so the trainer does not wait on local data; batch order per epoch comes from <see cref="BatchPlanner"/>
/// under (seed, epoch), so a resumed run sees the same batches. A sample whose image cannot be decoded is dropped
/// from its batch, counted once and reported with its file and record id, in training and evaluation alike; a batch
/// with no sample left is passed over (the next one takes its place). Past <c>max_skip_fraction</c> of all samples
/// the run stops with a <see cref="DataQualityException"/> listing them.
/// </summary>
public sealed class VisualChatTrainingData : ITrainingData<VisualChatTrainingBatch>, ISkippedSamples
{
    readonly IReadOnlyList<PreparedSample> _train, _eval;
    readonly SampleEncoder _encoder;
    readonly Collator _collator;
    readonly ClipImageProcessor _processor;
    readonly int _batchSize, _evalBatchSize, _workers;
    readonly long _seed;
    readonly bool _groupByLength;
    readonly ConcurrentDictionary<string, string> _skipped = new(StringComparer.Ordinal);
    readonly double _maxSkipFraction;
    int _emptyTrainBatches;

    public VisualChatTrainingData(IReadOnlyList<PreparedSample> train, IReadOnlyList<PreparedSample> eval, SampleEncoder encoder, Collator collator,
        ClipImageProcessor processor, int batchSize, int evalBatchSize, long seed, int workers = 2, bool groupByLength = false, double maxSkipFraction = 1.0)
    {
        if (train.Count == 0) throw new InvalidDataException("The training data holds no samples after reading, splitting and truncation; see the data report.");
        (_train, _eval, _encoder, _collator, _processor) = (train, eval, encoder, collator, processor);
        (_batchSize, _evalBatchSize, _seed, _workers, _groupByLength) = (batchSize, evalBatchSize, seed, Math.Max(1, workers), groupByLength);
        _maxSkipFraction = maxSkipFraction;
    }

    public bool HasEval => _eval.Count > 0;
    public int TrainSamples => _train.Count;
    public int EvalSamples => _eval.Count;
    /// <summary>"file#record: reason" of every sample dropped because an image failed to load.</summary>
    public IReadOnlyCollection<string> SkippedSamples => _skipped.Select(kv => $"{kv.Key}: {kv.Value}").ToList();
    public Action<string>? Log { get; set; }
    public int EmptyTrainBatches => _emptyTrainBatches;

    /// <summary>This rank's part of every global batch (distributed training); the whole data otherwise.</summary>
    public DataShard Shard { get; init; } = DataShard.Whole;

    IReadOnlyList<int[]> Plan(int epoch) =>
        BatchPlanner.Plan(_train.Select(s => s.ExpandedLength).ToArray(), _batchSize * Shard.Count, _seed, epoch, shuffle: true, groupByLength: _groupByLength);

    public int BatchesPerEpoch(int epoch) => Plan(epoch).Count;

    public IEnumerable<VisualChatTrainingBatch> TrainBatches(int epoch, int skip, CancellationToken cancellationToken) =>
        Load(_train, Plan(epoch).Skip(skip).Select(global => Shard.Slice(global, _batchSize)).ToList(), cancellationToken, train: true);

    public IEnumerable<VisualChatTrainingBatch> EvalBatches(CancellationToken cancellationToken) =>
        Load(_eval, Enumerable.Range(0, _eval.Count).Chunk(_evalBatchSize).Where((_, index) => Shard.OwnsEvalBatch(index)).ToList(), cancellationToken, train: false);

    IEnumerable<VisualChatTrainingBatch> Load(IReadOnlyList<PreparedSample> samples, IReadOnlyList<int[]> plan, CancellationToken cancellationToken, bool train)
    {
        // A rank's empty slice of a short last global batch counts as a passed-over batch, at its place in the plan.
        var nonEmpty = plan.Where(b => b.Length > 0).ToList();
        var emptyBefore = new List<int>();
        int empties = 0;
        foreach (var b in plan)
        {
            if (b.Length == 0)
            {
                empties++;
            }
            else { emptyBefore.Add(empties); empties = 0; }
        }

        var loader = new DataLoader<SampleImages>(samples, _encoder.Encode, _collator, DecodeImages, _workers);
        int position = 0;
        foreach (var loaded in loader.Read(nonEmpty, cancellationToken))
        {
            if (train) _emptyTrainBatches += emptyBefore[position];
            position++;
            using (loaded)
            {
                var kept = new List<int>();
                for (int i = 0; i < loaded.Items.Count; i++)
                {
                    if (loaded.Items[i].Error is { } error)
                    {
                        var source = string.Join("+", loaded.Batch.Samples[i].Source.SourceIds.Select(id => id.ToString()));
                        if (_skipped.TryAdd(source, error)) Log?.Invoke($"skipped sample {source}: {error}");
                    }
                    else
                    {
                        kept.Add(i);
                    }
                }
                EnsureSkipFraction();
                if (kept.Count == 0)
                {
                    if (train) _emptyTrainBatches++;
                    continue;
                }
                var batch = kept.Count == loaded.Items.Count
                    ? _collator.Collate(loaded.Batch.Samples)
                    : _collator.Collate(kept.Select(i => loaded.Batch.Samples[i]).ToList());
                var pixels = kept.SelectMany(i => loaded.Items[i].Pixels).ToList();
                var keys = kept.SelectMany(i => loaded.Items[i].Keys).ToList();
                Tensor? stacked = pixels.Count == 0 ? null : cat(pixels, 0).DetachFromDisposeScope();
                yield return new VisualChatTrainingBatch(batch, stacked, keys);
            }
        }
        if (train) _emptyTrainBatches += empties;
    }

    void EnsureSkipFraction()
    {
        int total = _train.Count + _eval.Count;
        if (_skipped.Count <= _maxSkipFraction * total) return;
        var examples = _skipped.Take(5).Select(kv => $"{kv.Key}: {kv.Value}");
        throw new DataQualityException(
            $"{_skipped.Count} of {total} samples could not be loaded, more than max_skip_fraction = {_maxSkipFraction:P1} of the data config; " +
            $"fix or remove them (`vchat data inspect` lists them all) or raise max_skip_fraction. First: {string.Join("; ", examples)}");
    }

    SampleImages DecodeImages(TokenizedSample sample, CancellationToken cancellationToken)
    {
        var pixels = new List<Tensor>();
        var keys = new List<string>();
        try
        {
            foreach (var image in sample.Images)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var bytes = ImageRefs.ReadBytes(image);
                var decoded = ImageLoader.Load(bytes, image.Describe());
                pixels.Add(_processor.Preprocess(decoded).unsqueeze(0).DetachFromDisposeScope());
                keys.Add(Convert.ToHexString(SHA256.HashData(bytes)));
            }
            return new SampleImages(pixels, keys, null);
        }
        catch (Exception e) when (e is ImageDecodeException or IOException or InvalidDataException or KeyNotFoundException)
        {
            foreach (var p in pixels) p.Dispose();
            return new SampleImages([], [], e.Message);
        }
    }

    sealed record SampleImages(IReadOnlyList<Tensor> Pixels, IReadOnlyList<string> Keys, string? Error) : IDisposable
    {
        public void Dispose() { foreach (var p in Pixels) p.Dispose(); }
    }
}
