using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// Per-forward data for a kernel that the decoder passes through without reading it (e.g. the image memory of
/// <c>causal+cross</c>). The decoder only needs its tensors: gradient checkpointing saves them with the layer input
/// and, in backward, rebuilds the extension around detached copies so gradients reach the tensors' producers.
/// </summary>
public interface IAttentionExtension
{
    /// <summary>Every tensor the extension holds, in a fixed order.</summary>
    IReadOnlyList<Tensor> Tensors { get; }

    /// <summary>The same extension around <paramref name="tensors"/> (same order and shapes as <see cref="Tensors"/>).</summary>
    IAttentionExtension WithTensors(IReadOnlyList<Tensor> tensors);
}
