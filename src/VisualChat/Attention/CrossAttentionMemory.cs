using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// What the <c>causal+cross</c> cross-attention reads: the image token embeddings seen so far, [B, M, D], and the
/// sequence slot (cache position) each one occupies, [B, M] int64. Rows with fewer image tokens are filled with
/// <see cref="UnusedSlot"/>, a slot after any query, so they are never attended. Passed to a forward as its
/// <see cref="AttentionContext.Extension"/>.
/// </summary>
public sealed record CrossAttentionMemory(Tensor Embeddings, Tensor Slots) : IAttentionExtension
{
    public const long UnusedSlot = 1L << 40;

    public IReadOnlyList<Tensor> Tensors => [Embeddings, Slots];

    public IAttentionExtension WithTensors(IReadOnlyList<Tensor> tensors) => new CrossAttentionMemory(tensors[0], tensors[1]);
}
