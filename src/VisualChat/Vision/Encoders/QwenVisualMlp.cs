using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>Qwen-VL block MLP, an nn.Sequential of c_fc → GELU (exact) → c_proj; the GELU slot holds no weights.</summary>
public sealed class QwenVisualMlp : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> c_fc;   // module-typed so LoRA can wrap it
    private readonly nn.Module<Tensor, Tensor> c_proj;   // module-typed so LoRA can wrap it

    public QwenVisualMlp(int width, int mlpSize, string name = "mlp") : base(name)
    {
        c_fc = nn.Linear(width, mlpSize);
        c_proj = nn.Linear(mlpSize, width);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return c_proj.forward(nn.functional.gelu(c_fc.forward(x))).MoveToOuterDisposeScope();
    }
}
