using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision;

/// <summary>
/// DSVC "baseline": nn.Sequential(Linear(visionWidth, lmWidth), LayerNorm(lmWidth, eps 1e-12)), so its keys are
/// <c>0.weight</c>, <c>0.bias</c>, <c>1.weight</c>, <c>1.bias</c>. Token count unchanged: every encoder token,
/// the CLS token included, becomes one LM embedding (CLIP-L/14 at 224 px: 257 in → 257 out; Qwen encoder: 256 → 256).
/// </summary>
public sealed class BaselineProjection : nn.Module<Tensor, Tensor>, IProjection
{
    // Held outside Module-typed fields: TorchSharp's reflection (e.g. in to()) would otherwise register them a second
    // time under their field names next to the positional "0"/"1".
    private readonly (Linear Linear, LayerNorm Norm) _layers;

    public BaselineProjection(int visionWidth, int lmWidth, string name = "projection", Generator? generator = null) : base(name)
    {
        InputWidth = visionWidth;
        OutputWidth = lmWidth;
        var linear = nn.Linear(visionWidth, lmWidth);
        var layerNorm = nn.LayerNorm(lmWidth, 1e-12);
        _layers = (linear, layerNorm);
        register_module("0", linear);
        register_module("1", layerNorm);
        using var owned = generator is null ? GeneratorInit.Create(null) : null;
        GeneratorInit.ResetDefaults(this, generator ?? owned!);
    }

    public ProjectionKind Kind => ProjectionKind.Baseline;
    public int InputWidth { get; }
    public int OutputWidth { get; }
    public int OutputTokens(int inputTokens) => inputTokens;

    public override Tensor forward(Tensor visionFeatures)
    {
        using var scope = NewDisposeScope();
        return _layers.Norm.forward(_layers.Linear.forward(visionFeatures)).MoveToOuterDisposeScope();
    }

    public Tensor Project(Tensor visionFeatures) => forward(visionFeatures);
}
