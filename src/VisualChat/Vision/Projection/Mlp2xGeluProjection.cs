using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Projection;

/// <summary>
/// LLaVA-1.5's projector (<c>mm_projector_type mlp2x_gelu</c>, HF <c>LlavaMultiModalProjector</c>):
/// Linear(visionWidth, lmWidth) → GELU (exact, erf) → Linear(lmWidth, lmWidth), keys <c>linear_1.*</c> and
/// <c>linear_2.*</c> as in transformers. Token count unchanged (LLaVA-1.5 at 336 px with CLS dropped: 576 → 576).
/// </summary>
public sealed class Mlp2xGeluProjection : nn.Module<Tensor, Tensor>, IProjection
{
    private readonly Linear linear_1;
    private readonly Linear linear_2;

    public Mlp2xGeluProjection(int visionWidth, int lmWidth, string name = "projection", Generator? generator = null) : base(name)
    {
        InputWidth = visionWidth;
        OutputWidth = lmWidth;
        linear_1 = nn.Linear(visionWidth, lmWidth);
        linear_2 = nn.Linear(lmWidth, lmWidth);
        RegisterComponents();
        using var owned = generator is null ? GeneratorInit.Create(null) : null;
        GeneratorInit.ResetDefaults(this, generator ?? owned!);
    }

    public ProjectionKind Kind => ProjectionKind.Mlp2xGelu;
    public int InputWidth { get; }
    public int OutputWidth { get; }
    public int OutputTokens(int inputTokens) => inputTokens;

    public override Tensor forward(Tensor visionFeatures)
    {
        using var scope = NewDisposeScope();
        return linear_2.forward(nn.functional.gelu(linear_1.forward(visionFeatures))).MoveToOuterDisposeScope();
    }

    public Tensor Project(Tensor visionFeatures) => forward(visionFeatures);
}
