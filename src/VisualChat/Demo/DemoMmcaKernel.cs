using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>
/// Multi-modal causal attention behind <see cref="IAttentionKernel"/>: <see cref="Prepare"/> builds one
/// <see cref="MmcaPlan"/> per forward from <see cref="AttentionContext.TokenModality"/>, every layer reuses it.
/// The plan of the previous forward is released when the next one is prepared (or on Dispose), because its tensors
/// live outside dispose scopes and must outlive the forward's backward pass.
/// </summary>
public sealed class DemoMmcaKernel : IAttentionKernel, IDisposable
{
    MmcaPlan? _plan;

    public void Prepare(AttentionContext context)
    {
        var modality = context.TokenModality
            ?? throw new ArgumentException("DemoMmcaKernel needs CausalLMInput.TokenModality ([B, L] TokenModality values).", nameof(context));
        _plan?.Dispose();
        _plan = new MmcaPlan(modality, context.QueryLength);
        context.Mask = null;
        context.UseCausalFastPath = false;
    }

    public Tensor Attend(Tensor q, Tensor k, Tensor v, AttentionContext context) =>
        MultiModalCausalAttention.Attend(q, k, v, _plan ?? throw new InvalidOperationException("DemoMmcaKernel.Attend called before Prepare."));

    public void Dispose()
    {
        _plan?.Dispose();
        _plan = null;
    }
}
