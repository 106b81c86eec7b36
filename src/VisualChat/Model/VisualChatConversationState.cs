using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// Where one or several ongoing conversations stand: besides the <see cref="DecoderState"/> (KV cache with each
/// position's padding and modality, token history, next logits), how many images each row has shown and for
/// <c>causal+cross</c> the image memory. Rows are conversations; shorter rounds are left-padded, and padded positions
/// stay masked for the rest of the conversation. The generation engine decodes single-row states.
/// </summary>
public sealed class VisualChatConversationState : DecoderState
{
    internal VisualChatConversationState(int numLayers, int batchSize, long capacity) : base(numLayers, capacity, batchSize)
    {
        imageCounts = new int[batchSize];
    }

    readonly int[] imageCounts;

    public IReadOnlyList<int> ImageCounts => imageCounts;
    internal CrossAttentionMemory? Memory { get; private set; }

    internal void AddImages(int row, int count) => imageCounts[row] += count;

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

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (!disposing) return;
        Memory?.Embeddings.Dispose();
        Memory?.Slots.Dispose();
        Memory = null;
    }
}
