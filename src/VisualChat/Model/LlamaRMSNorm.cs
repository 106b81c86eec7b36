using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>RMS norm as HF LlamaRMSNorm: the variance is taken in fp32 whatever the input dtype.</summary>
internal sealed class LlamaRMSNorm : nn.Module<Tensor, Tensor>
{
    // Held for the module's life: a temporary Scalar may be finalized during the native call (see TorchScalars).
    readonly Scalar variance_epsilon;
    static readonly Scalar Two = 2.ToScalar();
    public readonly TorchSharp.Modules.Parameter weight;

    public LlamaRMSNorm(long hiddenSize, double eps = 1e-6) : base(nameof(LlamaRMSNorm))
    {
        variance_epsilon = eps.ToScalar();
        weight = new TorchSharp.Modules.Parameter(ones(hiddenSize));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = NewDisposeScope();
        var inputDtype = hidden_states.dtype;
        var x = hidden_states.to(ScalarType.Float32);
        var variance = x.pow(Two).mean(new long[] { -1 }, keepdim: true);
        x = x * rsqrt(variance.add(variance_epsilon, TorchScalars.One));
        return (weight * x.to(inputDtype)).MoveToOuterDisposeScope();
    }
}
