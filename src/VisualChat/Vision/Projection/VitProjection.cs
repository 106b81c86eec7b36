using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Vision.Projection;

/// <summary>
/// DSVC "vit" (VisProjection_vit): one more CLIP encoder layer over the encoder tokens (<c>vis_layer.*</c>, HF
/// CLIPEncoderLayer names), then nn.Sequential(Linear(visionWidth, lmWidth), LayerNorm(lmWidth, eps 1e-12))
/// (<c>projection.0.*</c>, <c>projection.1.*</c>). Token count unchanged, CLS included (CLIP-L/14 224: 257 → 257).
/// </summary>
public sealed class VitProjection : nn.Module<Tensor, Tensor>, IProjection
{
    private readonly ClipEncoderLayer vis_layer;
    private readonly Sequential projection;
    private readonly Linear linear;
    private readonly LayerNorm layer_norm;

    public VitProjection(int visionWidth, int lmWidth, ClipVisionConfig layerConfig, string name = "projection", Generator? generator = null) : base(name)
    {
        InputWidth = visionWidth;
        OutputWidth = lmWidth;
        var config = layerConfig.Clone();
        config.HiddenSize = visionWidth;
        if (visionWidth % config.NumAttentionHeads != 0)
        {
            throw new ArgumentException(
                $"vit projection: vision width {visionWidth} is not divisible by num_attention_heads {config.NumAttentionHeads} of the layer config.",
                nameof(layerConfig));
        }

        vis_layer = new ClipEncoderLayer(config);
        linear = nn.Linear(visionWidth, lmWidth);
        layer_norm = nn.LayerNorm(lmWidth, 1e-12);
        projection = nn.Sequential(("0", linear), ("1", layer_norm));
        register_module("vis_layer", vis_layer);
        register_module("projection", projection);
        using var owned = generator is null ? GeneratorInit.Create(null) : null;
        GeneratorInit.ResetDefaults(this, generator ?? owned!);
    }

    public ProjectionKind Kind => ProjectionKind.Vit;
    public int InputWidth { get; }
    public int OutputWidth { get; }
    public int OutputTokens(int inputTokens) => inputTokens;

    public override Tensor forward(Tensor visionFeatures)
    {
        using var scope = NewDisposeScope();
        return projection.forward(vis_layer.forward(visionFeatures)).MoveToOuterDisposeScope();
    }

    public Tensor Project(Tensor visionFeatures) => forward(visionFeatures);
}
