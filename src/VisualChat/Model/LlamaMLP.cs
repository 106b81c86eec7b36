using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>SwiGLU feed-forward: down(silu(gate(x)) * up(x)).</summary>
internal sealed class LlamaMLP : nn.Module<Tensor, Tensor>
{
    public readonly nn.Module<Tensor, Tensor> gate_proj;
    public readonly nn.Module<Tensor, Tensor> up_proj;
    public readonly nn.Module<Tensor, Tensor> down_proj;

    public LlamaMLP(LlamaConfig config, bool initialize = true) : base(nameof(LlamaMLP))
    {
        gate_proj = LlamaLinear.Create(config, config.HiddenSize, config.IntermediateSize, config.MlpBias, initialize);
        up_proj = LlamaLinear.Create(config, config.HiddenSize, config.IntermediateSize, config.MlpBias, initialize);
        down_proj = LlamaLinear.Create(config, config.IntermediateSize, config.HiddenSize, config.MlpBias, initialize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return down_proj.forward(nn.functional.silu(gate_proj.forward(x)) * up_proj.forward(x)).MoveToOuterDisposeScope();
    }
}
