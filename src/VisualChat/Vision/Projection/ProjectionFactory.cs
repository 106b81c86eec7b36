using static TorchSharp.torch;

namespace VisualChat.Vision.Projection;

/// <summary>Builds the projection DSVC selects with <c>--vis_proj baseline|vit|perceiver</c>, or LLaVA-1.5's <c>mlp2x_gelu</c>.</summary>
public static class ProjectionFactory
{
    public static ProjectionKind ParseKind(string kind) => kind.Trim().ToLowerInvariant() switch
    {
        "baseline" => ProjectionKind.Baseline,
        "vit" => ProjectionKind.Vit,
        "perceiver" => ProjectionKind.Perceiver,
        Mlp2xGeluName => ProjectionKind.Mlp2xGelu,
        _ => throw new ArgumentException($"Unknown projection kind '{kind}'; use baseline, vit, perceiver or mlp2x_gelu.", nameof(kind)),
    };

    public const string Mlp2xGeluName = "mlp2x_gelu";

    /// <summary>The name <see cref="ParseKind"/> reads back.</summary>
    public static string KindName(ProjectionKind kind) => kind switch
    {
        ProjectionKind.Baseline => "baseline",
        ProjectionKind.Vit => "vit",
        ProjectionKind.Perceiver => "perceiver",
        ProjectionKind.Mlp2xGelu => Mlp2xGeluName,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown projection kind."),
    };

    public static IProjection Create(string kind, int visionWidth, int lmWidth, ProjectionOptions? options = null, Generator? generator = null) =>
        Create(ParseKind(kind), visionWidth, lmWidth, options, generator);

    /// <param name="generator">Draws the initial weights; null uses a generator seeded from one draw of libtorch's.</param>
    public static IProjection Create(ProjectionKind kind, int visionWidth, int lmWidth, ProjectionOptions? options = null, Generator? generator = null)
    {
        if (visionWidth <= 0) throw new ArgumentOutOfRangeException(nameof(visionWidth), "Vision width must be positive.");
        if (lmWidth <= 0) throw new ArgumentOutOfRangeException(nameof(lmWidth), "LM width must be positive.");
        options ??= new ProjectionOptions();
        return kind switch
        {
            ProjectionKind.Baseline => new BaselineProjection(visionWidth, lmWidth, generator: generator),
            ProjectionKind.Vit => new VitProjection(visionWidth, lmWidth, options.VitLayerConfig
                ?? throw new ArgumentException("The vit projection needs ProjectionOptions.VitLayerConfig (the vision encoder's CLIP config).", nameof(options)), generator: generator),
            ProjectionKind.Perceiver => new PerceiverProjection(visionWidth, lmWidth, options.PerceiverGridSize, options.PerceiverHeads, generator: generator),
            ProjectionKind.Mlp2xGelu => new Mlp2xGeluProjection(visionWidth, lmWidth, generator: generator),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown projection kind."),
        };
    }
}
