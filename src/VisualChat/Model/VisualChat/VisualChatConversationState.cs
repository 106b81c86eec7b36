using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// Where one or several ongoing conversations stand: the KV cache of everything seen so far (with each position's
/// padding and modality), how many images each row has shown, every token id for the repetition penalty, the logits
/// for the next token, and for <c>causal+cross</c> the image memory. Rows are conversations; shorter rounds are
/// left-padded, and padded positions stay masked for the rest of the conversation.
/// </summary>
public sealed class VisualChatConversationState : IDisposable
{
    internal VisualChatConversationState(int numLayers, int batchSize, long capacity)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), "A conversation state needs at least one row.");
        Cache = new KVCache(numLayers, capacity);
        BatchSize = batchSize;
        imageCounts = new int[batchSize];
        history = Enumerable.Range(0, batchSize).Select(_ => new List<int>()).ToArray();
    }

    readonly int[] imageCounts;
    readonly List<int>[] history;

    public KVCache Cache { get; }
    public int BatchSize { get; }
    /// <summary>Positions in the cache (padding included).</summary>
    public long Length => Cache.Length;
    public IReadOnlyList<int> ImageCounts => imageCounts;
    /// <summary>Token ids per row (prompts with placeholders, generated answers), for the repetition penalty.</summary>
    public IReadOnlyList<IReadOnlyList<int>> History => history;
    /// <summary>[B, lm_vocab_size] logits for the next token, after the last appended position; null before any.</summary>
    public Tensor? NextLogits { get; private set; }
    internal CrossAttentionMemory? Memory { get; private set; }

    internal void SetNextLogits(Tensor logits)
    {
        NextLogits?.Dispose();
        NextLogits = logits.DetachFromDisposeScope();
    }

    internal void AddImages(int row, int count) => imageCounts[row] += count;
    internal void AddHistory(int row, IEnumerable<int> ids) => history[row].AddRange(ids);

    internal void AppendMemory(CrossAttentionMemory memory)
    {
        if (memory.Slots.shape[1] == 0) return;
        if (Memory is null) {
            Memory = new CrossAttentionMemory(memory.Embeddings.detach().DetachFromDisposeScope(), memory.Slots.DetachFromDisposeScope());
            return;
        }
        var old = Memory;
        Memory = new CrossAttentionMemory(
            cat(new[] { old.Embeddings, memory.Embeddings.detach() }, 1).DetachFromDisposeScope(),
            cat(new[] { old.Slots, memory.Slots }, 1).DetachFromDisposeScope());
        old.Embeddings.Dispose();
        old.Slots.Dispose();
    }

    public void Dispose()
    {
        Cache.Dispose();
        NextLogits?.Dispose();
        Memory?.Embeddings.Dispose();
        Memory?.Slots.Dispose();
    }
}
