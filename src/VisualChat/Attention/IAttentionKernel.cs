using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// The attention computation after projections and RoPE. Swapping the kernel swaps the attention mode
/// (plain causal, multi-modal causal, causal + cross) without touching the decoder. Kernels are stateless, as
/// Hugging Face's attention implementations: whatever one forward needs lives in its <see cref="AttentionContext"/>,
/// and the decoder says which layer calls, so one kernel may serve concurrent forwards.
/// </summary>
public interface IAttentionKernel
{
    /// <summary>Called once per model forward, before any layer: builds what every layer shares (masks, index plans)
    /// into <paramref name="context"/>. <see cref="AttentionContext.Mask"/> belongs to the caller's dispose scope;
    /// <see cref="AttentionContext.KernelState"/> is freed when the context is disposed.</summary>
    void Prepare(AttentionContext context);

    /// <summary>q [B, H, Lq, D], k and v [B, H, Lk, D] (KV heads already repeated to H) → [B, H, Lq, D], for decoder
    /// layer <paramref name="layerIndex"/> (0-based).</summary>
    Tensor Attend(Tensor q, Tensor k, Tensor v, int layerIndex, AttentionContext context);
}
