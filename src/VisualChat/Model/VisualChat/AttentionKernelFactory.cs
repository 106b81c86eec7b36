using VisualChat.Attention;

namespace VisualChat.Model;

/// <summary>The one place an <see cref="AttentionMode"/> becomes a kernel.</summary>
public static class AttentionKernelFactory
{
    /// <param name="crossLayers">The model's gated cross-attention layers, one per decoder layer; required for <c>causal+cross</c>.</param>
    public static IAttentionKernel Create(AttentionMode mode, IList<GatedCrossAttention>? crossLayers = null) => mode switch
    {
        AttentionMode.Causal => CausalAttentionKernel.Instance,
        AttentionMode.Mmca => MmcaAttentionKernel.Instance,
        AttentionMode.CausalCross => new CausalCrossAttentionKernel(crossLayers
            ?? throw new ArgumentException("The causal+cross attention mode needs the model's cross-attention layers.", nameof(crossLayers))),
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown attention mode."),
    };
}
