using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>HF <c>CLIPMLP</c>: fc1 → activation (quick_gelu or gelu) → fc2.</summary>
public sealed class ClipMlp : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> fc1;   // module-typed so LoRA can wrap it
    private readonly nn.Module<Tensor, Tensor> fc2;   // module-typed so LoRA can wrap it
    private readonly Func<Tensor, Tensor> activation;

    public ClipMlp(int hiddenSize, int intermediateSize, string hiddenAct, string name = "mlp") : base(name)
    {
        activation = VisionActivations.Resolve(hiddenAct);
        fc1 = nn.Linear(hiddenSize, intermediateSize);
        fc2 = nn.Linear(intermediateSize, hiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return fc2.forward(activation(fc1.forward(x))).MoveToOuterDisposeScope();
    }
}
