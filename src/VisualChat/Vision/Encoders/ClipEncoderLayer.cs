using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>HF <c>CLIPEncoderLayer</c>: pre-norm residual attention then pre-norm residual MLP.</summary>
public sealed class ClipEncoderLayer : nn.Module<Tensor, Tensor>
{
    private readonly ClipAttention self_attn;
    private readonly LayerNorm layer_norm1;
    private readonly ClipMlp mlp;
    private readonly LayerNorm layer_norm2;

    public ClipEncoderLayer(ClipVisionConfig config, string name = "layer") : base(name)
    {
        self_attn = new ClipAttention(config.HiddenSize, config.NumAttentionHeads);
        layer_norm1 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        mlp = new ClipMlp(config.HiddenSize, config.IntermediateSize, config.HiddenAct);
        layer_norm2 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var afterAttention = hiddenStates.add(self_attn.forward(layer_norm1.forward(hiddenStates)), TorchScalars.One);
        var output = afterAttention.add(mlp.forward(layer_norm2.forward(afterAttention)), TorchScalars.One);
        return output.MoveToOuterDisposeScope();
    }
}
