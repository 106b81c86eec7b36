using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// The <c>mmca</c> attention mode: <see cref="MultiModalCausalAttention"/> with one <see cref="MmcaPlan"/> per forward,
/// built in <see cref="Prepare"/> from the modality of every key (cached + new) and shared by all layers. The plan owns
/// detached tensors, so the kernel keeps it until <see cref="EndForward"/> (or the next Prepare) disposes it.
/// Without a modality map every position counts as text, which is plain causal attention.
/// </summary>
public sealed class MmcaAttentionKernel : IAttentionKernel, IDisposable
{
    MmcaPlan? plan;

    /// <summary>The plan of the forward in progress (null outside one).</summary>
    public MmcaPlan? CurrentPlan => plan;

    public void Prepare(AttentionContext context)
    {
        EndForward();
        context.Mask = null;
        context.UseCausalFastPath = false;
        using var scope = NewDisposeScope();
        var modality = context.TokenModality ?? TextModality(context);
        // A position is padding when either the key-padding mask or the modality map says so.
        if (context.KeyPaddingMask is { } padding)
            modality = modality.masked_fill(padding.to(ScalarType.Bool).logical_not(), TokenModalityScalars.Padding);
        plan = new MmcaPlan(modality, context.QueryLength, context.ComputeType);
    }

    static Tensor TextModality(AttentionContext context) =>
        full(context.QueryPositions.shape[0], context.KeyLength, TokenModalityScalars.Text, dtype: ScalarType.Int64, device: context.QueryPositions.device);

    public Tensor Attend(Tensor q, Tensor k, Tensor v, AttentionContext context) =>
        MultiModalCausalAttention.Attend(q, k, v, plan ?? throw new InvalidOperationException("MmcaAttentionKernel.Attend was called without Prepare for this forward."));

    /// <summary>Frees the plan of the finished forward.</summary>
    public void EndForward()
    {
        plan?.Dispose();
        plan = null;
    }

    public void Dispose() => EndForward();
}
