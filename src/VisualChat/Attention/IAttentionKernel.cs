using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// The attention computation after projections and RoPE. Swapping the kernel swaps the attention mode
/// (plain causal, multi-modal causal, causal + cross) without touching the decoder.
/// </summary>
public interface IAttentionKernel
{
    /// <summary>Called once per model forward, before any layer; builds whatever mask the kernel needs into <paramref name="context"/>.
    /// Tensors it creates belong to the caller's dispose scope.</summary>
    void Prepare(AttentionContext context);

    /// <summary>q [B, H, Lq, D], k and v [B, H, Lk, D] (KV heads already repeated to H) → [B, H, Lq, D].</summary>
    Tensor Attend(Tensor q, Tensor k, Tensor v, AttentionContext context);
}
