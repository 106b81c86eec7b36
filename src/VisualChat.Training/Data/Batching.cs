using System.Runtime.CompilerServices;
using System.Threading.Channels;
using TorchSharp;
using VisualChat.Conversations;
using static TorchSharp.torch;

namespace VisualChat.Data;

/// <summary>Which samples go into which batch, deterministic under (seed, epoch).</summary>
public static class BatchPlanner
{
    /// <param name="lengths">Per-sample lengths (used when <paramref name="groupByLength"/>).</param>
    /// <param name="groupByLength">Shuffle, cut into mega-batches of <paramref name="megaBatchFactor"/> batches, sort each
    /// by length (longest first) so batches hold similar lengths, then shuffle the batch order.</param>
    public static IReadOnlyList<int[]> Plan(IReadOnlyList<int> lengths, int batchSize, long seed, int epoch,
        bool shuffle = true, bool groupByLength = false, bool dropLast = false, int megaBatchFactor = 50)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "batch size must be at least 1");
        var order = Enumerable.Range(0, lengths.Count).ToArray();
        var random = StableRandom.For(seed, "batches", epoch);
        if (shuffle || groupByLength) random.Shuffle(order);
        if (groupByLength)
        {
            int mega = batchSize * Math.Max(1, megaBatchFactor);
            for (int start = 0; start < order.Length; start += mega)
            {
                int count = Math.Min(mega, order.Length - start);
                Array.Sort(order, start, count, Comparer<int>.Create((a, b) =>
                {
                    int c = lengths[b].CompareTo(lengths[a]);
                    return c != 0 ? c : a.CompareTo(b);
                }));
            }
        }
        var batches = order.Chunk(batchSize).Where(b => !dropLast || b.Length == batchSize).ToList();
        if (groupByLength && shuffle) random.Shuffle(batches);
        return batches;
    }
}

/// <summary>A padded batch: <c>input_ids</c> [B,L] int64, <c>labels</c> [B,L] with -100 on prompts and padding,
/// <c>attention_mask</c> [B,L] int64 (1 on tokens), right padding, L a multiple of the pad multiple; plus each
/// sample's images in order.</summary>
public sealed class TrainingBatch : IDisposable
{
    public required Tensor InputIds { get; init; }
    public required Tensor Labels { get; init; }
    public required Tensor AttentionMask { get; init; }
    public required IReadOnlyList<IReadOnlyList<ImageRef>> Images { get; init; }
    public required IReadOnlyList<TokenizedSample> Samples { get; init; }

    public void Dispose()
    {
        InputIds.Dispose();
        Labels.Dispose();
        AttentionMask.Dispose();
    }
}

/// <summary>Pads tokenized samples into a <see cref="TrainingBatch"/>.</summary>
public sealed class Collator(int padId, int padToMultipleOf = 8)
{
    public int PadId { get; } = padId;
    public int PadToMultipleOf { get; } = padToMultipleOf;

    /// <summary>A collator for <paramref name="tokenizer"/>: its pad id, or EOS when it has none (LLaMA).</summary>
    public static Collator For(Text.ITokenizer tokenizer, int padToMultipleOf = 8) =>
        new(tokenizer.PadId >= 0 ? tokenizer.PadId : tokenizer.EosId, padToMultipleOf);

    public TrainingBatch Collate(IReadOnlyList<TokenizedSample> samples)
    {
        if (samples.Count == 0) throw new ArgumentException("Cannot collate an empty batch.", nameof(samples));
        int longest = samples.Max(s => s.Length);
        int multiple = Math.Max(1, PadToMultipleOf);
        int length = (longest + multiple - 1) / multiple * multiple;
        int batch = samples.Count;
        var ids = new long[batch * length];
        var labels = new long[batch * length];
        var mask = new long[batch * length];
        Array.Fill(ids, PadId);
        Array.Fill(labels, Conversations.ConversationTemplate.IgnoreLabel);
        for (int b = 0; b < batch; b++)
        {
            var s = samples[b];
            int row = b * length;
            for (int t = 0; t < s.Length; t++)
            {
                ids[row + t] = s.InputIds[t];
                labels[row + t] = s.Labels[t];
                mask[row + t] = 1;
            }
        }
        return new TrainingBatch
        {
            InputIds = tensor(ids, [batch, length], ScalarType.Int64),
            Labels = tensor(labels, [batch, length], ScalarType.Int64),
            AttentionMask = tensor(mask, [batch, length], ScalarType.Int64),
            Images = samples.Select(s => s.Images).ToArray(),
            Samples = samples,
        };
    }
}

/// <summary>A collated batch plus the per-sample results of the user transform (e.g. decoded, preprocessed images).</summary>
public sealed class LoadedBatch<T>(TrainingBatch batch, IReadOnlyList<T> items) : IDisposable
{
    public TrainingBatch Batch { get; } = batch;
    public IReadOnlyList<T> Items { get; } = items;

    public void Dispose()
    {
        Batch.Dispose();
        foreach (var item in Items) (item as IDisposable)?.Dispose();
    }
}

/// <summary>
/// Background prefetcher: tokenizes, runs the per-sample transform on up to <c>workers</c> threads and collates,
/// keeping at most <c>prefetchBatches</c> batches ahead. Batches come out in plan order whatever the worker count.
/// </summary>
public sealed class DataLoader<T>(
    IReadOnlyList<PreparedSample> samples,
    Func<Conversation, TokenizedSample> encode,
    Collator collator,
    Func<TokenizedSample, CancellationToken, T> transform,
    int workers = 2,
    int prefetchBatches = 4)
{
    public IEnumerable<LoadedBatch<T>> Read(IReadOnlyList<int[]> plan, CancellationToken cancellationToken = default) =>
        ReadAsync(plan, cancellationToken).ToBlockingEnumerable(cancellationToken);

    public async IAsyncEnumerable<LoadedBatch<T>> ReadAsync(IReadOnlyList<int[]> plan, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var token = stop.Token;
        var channel = Channel.CreateBounded<Task<LoadedBatch<T>>>(new BoundedChannelOptions(Math.Max(1, prefetchBatches)) { SingleReader = true, SingleWriter = true });
        using var slots = new SemaphoreSlim(Math.Max(1, workers));
        var producer = Task.Run(async () =>
        {
            try
            {
                foreach (var batch in plan)
                {
                    token.ThrowIfCancellationRequested();
                    await channel.Writer.WriteAsync(LoadAsync(batch, slots, token), token).ConfigureAwait(false);
                }
                channel.Writer.TryComplete();
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
            }
        }, CancellationToken.None);

        try
        {
            await foreach (var pending in channel.Reader.ReadAllAsync(token).ConfigureAwait(false))
                yield return await pending.ConfigureAwait(false);
            await producer.ConfigureAwait(false);
        }
        finally
        {
            stop.Cancel();
            try { await producer.ConfigureAwait(false); } catch (OperationCanceledException) { }
            while (channel.Reader.TryRead(out var leftover))
            {
                try { (await leftover.ConfigureAwait(false)).Dispose(); } catch (Exception) { /* abandoned batch */ }
            }
        }
    }

    private async Task<LoadedBatch<T>> LoadAsync(int[] batch, SemaphoreSlim slots, CancellationToken token)
    {
        var tokenized = new TokenizedSample[batch.Length];
        var items = new T[batch.Length];
        await Task.WhenAll(batch.Select(async (sampleIndex, position) =>
        {
            await slots.WaitAsync(token).ConfigureAwait(false);
            try
            {
                await Task.Yield();
                var sample = encode(samples[sampleIndex].Conversation);
                tokenized[position] = sample;
                items[position] = transform(sample, token);
            }
            finally
            {
                slots.Release();
            }
        })).ConfigureAwait(false);
        return new LoadedBatch<T>(collator.Collate(tokenized), items);
    }
}
