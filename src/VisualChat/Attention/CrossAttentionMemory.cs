using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// What the <c>causal+cross</c> cross-attention reads: the image token embeddings seen so far, [B, M, D], and the
/// sequence slot (cache position) each one occupies, [B, M] int64. Rows with fewer image tokens are filled with
/// <see cref="UnusedSlot"/>, a slot after any query, so they are never attended.
/// </summary>
public sealed record CrossAttentionMemory(Tensor Embeddings, Tensor Slots)
{
    public const long UnusedSlot = 1L << 40;
}
