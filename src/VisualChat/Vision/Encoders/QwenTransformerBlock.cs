using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>Qwen-VL's TransformerBlock: the stack <c>resblocks.{i}</c>.</summary>
public sealed class QwenTransformerBlock : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<QwenVisualAttentionBlock> resblocks;

    public QwenTransformerBlock(QwenVisionConfig config, string name = "transformer") : base(name)
    {
        resblocks = new ModuleList<QwenVisualAttentionBlock>();
        for (var i = 0; i < config.Layers; i++)
            resblocks.Add(new QwenVisualAttentionBlock(config));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var hidden = x;
        foreach (var block in resblocks)
            hidden = block.forward(hidden);
        return (ReferenceEquals(hidden, x) ? hidden.alias() : hidden).MoveToOuterDisposeScope();
    }
}
