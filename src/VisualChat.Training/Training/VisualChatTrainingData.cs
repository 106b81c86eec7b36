using System.Collections.Concurrent;
using System.Security.Cryptography;
using VisualChat.Data;
using VisualChat.Vision;
using static TorchSharp.torch;
using VisualChat.Conversations;

namespace VisualChat.Training;

/// <summary>
/// Conversations → batches with pixels. Images are decoded and preprocessed on worker threads by the bounded
/// prefetcher, so the trainer does not wait on local data; batch order per epoch comes from <see cref="BatchPlanner"/>
/// under (seed, epoch), so a resumed run sees the same batches. A sample whose image cannot be decoded is dropped
/// from its batch, counted and reported with its file and record id (a batch with no sample left is an error).
/// </summary>
public sealed class VisualChatTrainingData : ITrainingData<VisualChatTrainingBatch>
{
    readonly IReadOnlyList<PreparedSample> _train, _eval;
    readonly SampleEncoder _encoder;
    readonly Collator _collator;
    readonly ClipImageProcessor _processor;
    readonly int _batchSize, _evalBatchSize, _workers;
    readonly long _seed;
    readonly bool _groupByLength;
    readonly ConcurrentQueue<string> _skipped = new();

    public VisualChatTrainingData(IReadOnlyList<PreparedSample> train, IReadOnlyList<PreparedSample> eval, SampleEncoder encoder, Collator collator,
        ClipImageProcessor processor, int batchSize, int evalBatchSize, long seed, int workers = 2, bool groupByLength = false)
    {
        if (train.Count == 0) throw new InvalidDataException("The training data holds no samples after reading, splitting and truncation; see the data report.");
        (_train, _eval, _encoder, _collator, _processor) = (train, eval, encoder, collator, processor);
        (_batchSize, _evalBatchSize, _seed, _workers, _groupByLength) = (batchSize, evalBatchSize, seed, Math.Max(1, workers), groupByLength);
    }

    public bool HasEval => _eval.Count > 0;
    public int TrainSamples => _train.Count;
    public int EvalSamples => _eval.Count;
    /// <summary>"file#record: reason" of every sample dropped because an image failed to load.</summary>
    public IReadOnlyCollection<string> SkippedSamples => _skipped;
    public Action<string>? Log { get; set; }

    IReadOnlyList<int[]> Plan(int epoch) =>
        BatchPlanner.Plan(_train.Select(s => s.ExpandedLength).ToArray(), _batchSize, _seed, epoch, shuffle: true, groupByLength: _groupByLength);

    public int BatchesPerEpoch(int epoch) => Plan(epoch).Count;

    public IEnumerable<VisualChatTrainingBatch> TrainBatches(int epoch, int skip, CancellationToken cancellationToken) =>
        Load(_train, Plan(epoch).Skip(skip).ToList(), cancellationToken);

    public IEnumerable<VisualChatTrainingBatch> EvalBatches(CancellationToken cancellationToken) =>
        Load(_eval, Enumerable.Range(0, _eval.Count).Chunk(_evalBatchSize).ToList(), cancellationToken);

    IEnumerable<VisualChatTrainingBatch> Load(IReadOnlyList<PreparedSample> samples, IReadOnlyList<int[]> plan, CancellationToken cancellationToken)
    {
        var loader = new DataLoader<SampleImages>(samples, _encoder.Encode, _collator, DecodeImages, _workers);
        foreach (var loaded in loader.Read(plan, cancellationToken))
        {
            using (loaded)
            {
                var kept = new List<int>();
                for (int i = 0; i < loaded.Items.Count; i++)
                {
                    if (loaded.Items[i].Error is { } error)
                    {
                        var source = string.Join("+", loaded.Batch.Samples[i].Source.SourceIds.Select(id => id.ToString()));
                        _skipped.Enqueue($"{source}: {error}");
                        Log?.Invoke($"skipped sample {source}: {error}");
                    }
                    else kept.Add(i);
                }
                if (kept.Count == 0)
                    throw new InvalidDataException($"Every sample of a batch failed to load its images: {string.Join("; ", loaded.Items.Select(i => i.Error))}");
                var batch = kept.Count == loaded.Items.Count
                    ? _collator.Collate(loaded.Batch.Samples)
                    : _collator.Collate(kept.Select(i => loaded.Batch.Samples[i]).ToList());
                var pixels = kept.SelectMany(i => loaded.Items[i].Pixels).ToList();
                var keys = kept.SelectMany(i => loaded.Items[i].Keys).ToList();
                Tensor? stacked = pixels.Count == 0 ? null : cat(pixels, 0).DetachFromDisposeScope();
                yield return new VisualChatTrainingBatch(batch, stacked, keys);
            }
        }
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
