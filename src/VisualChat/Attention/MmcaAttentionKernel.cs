using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// The <c>mmca</c> attention mode: <see cref="MultiModalCausalAttention"/> with one <see cref="MmcaPlan"/> per forward,
/// built in <see cref="Prepare"/> from the modality of every key (cached + new) and the key padding, kept in the
/// forward's <see cref="AttentionContext.KernelState"/> and shared by all layers. The kernel itself holds nothing.
/// Without a modality map every non-padded position counts as text, which is plain causal attention.
/// </summary>
public sealed class MmcaAttentionKernel : IAttentionKernel
{
    public static readonly MmcaAttentionKernel Instance = new();

    public void Prepare(AttentionContext context)
    {
        context.Mask = null;
        context.UseCausalFastPath = false;
        using var scope = NewDisposeScope();
        var modality = context.TokenModality ?? TextModality(context);
        // A position is padding when either the key-padding mask or the modality map says so.
        if (context.KeyPaddingMask is { } padding)
            modality = modality.masked_fill(padding.to(ScalarType.Bool).logical_not(), TokenModalityScalars.Padding);
        context.KernelState = new MmcaPlan(modality, context.QueryLength, context.ComputeType);
    }

    static Tensor TextModality(AttentionContext context) =>
        full(context.QueryPositions.shape[0], context.KeyLength, TokenModalityScalars.Text, dtype: ScalarType.Int64, device: context.QueryPositions.device);

    public Tensor Attend(Tensor q, Tensor k, Tensor v, int layerIndex, AttentionContext context) =>
        MultiModalCausalAttention.Attend(q, k, v, context.KernelState as MmcaPlan
            ?? throw new InvalidOperationException("MmcaAttentionKernel.Attend was called with a context its Prepare did not build (no MmcaPlan in KernelState)."));
}
