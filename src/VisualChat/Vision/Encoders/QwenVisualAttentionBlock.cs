using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>Qwen-VL VisualAttentionBlock: x + attn(ln_1(x)), then + mlp(ln_2(x)).</summary>
public sealed class QwenVisualAttentionBlock : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm ln_1;
    private readonly QwenVisualAttention attn;
    private readonly LayerNorm ln_2;
    private readonly QwenVisualMlp mlp;

    public QwenVisualAttentionBlock(QwenVisionConfig config, string name = "resblock") : base(name)
    {
        ln_1 = nn.LayerNorm(config.Width, config.LayerNormEps);
        attn = new QwenVisualAttention(config.Width, config.Heads);
        ln_2 = nn.LayerNorm(config.Width, config.LayerNormEps);
        mlp = new QwenVisualMlp(config.Width, config.MlpSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var afterAttention = x.add(attn.forward(ln_1.forward(x)), TorchScalars.One);
        return afterAttention.add(mlp.forward(ln_2.forward(afterAttention)), TorchScalars.One).MoveToOuterDisposeScope();
    }
}
