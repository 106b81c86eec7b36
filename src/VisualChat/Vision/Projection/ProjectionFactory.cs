namespace VisualChat.Vision;

/// <summary>Builds the projection DSVC selects with <c>--vis_proj baseline|vit|perceiver</c>.</summary>
public static class ProjectionFactory
{
    public static ProjectionKind ParseKind(string kind) => kind.Trim().ToLowerInvariant() switch
    {
        "baseline" => ProjectionKind.Baseline,
        "vit" => ProjectionKind.Vit,
        "perceiver" => ProjectionKind.Perceiver,
        _ => throw new ArgumentException($"Unknown projection kind '{kind}'; use baseline, vit or perceiver.", nameof(kind)),
    };

    public static IProjection Create(string kind, int visionWidth, int lmWidth, ProjectionOptions? options = null) =>
        Create(ParseKind(kind), visionWidth, lmWidth, options);

    public static IProjection Create(ProjectionKind kind, int visionWidth, int lmWidth, ProjectionOptions? options = null)
    {
        if (visionWidth <= 0) throw new ArgumentOutOfRangeException(nameof(visionWidth), "Vision width must be positive.");
        if (lmWidth <= 0) throw new ArgumentOutOfRangeException(nameof(lmWidth), "LM width must be positive.");
        options ??= new ProjectionOptions();
        return kind switch
        {
            ProjectionKind.Baseline => new BaselineProjection(visionWidth, lmWidth),
            ProjectionKind.Vit => new VitProjection(visionWidth, lmWidth, options.VitLayerConfig
                ?? throw new ArgumentException("The vit projection needs ProjectionOptions.VitLayerConfig (the vision encoder's CLIP config).", nameof(options))),
            ProjectionKind.Perceiver => new PerceiverProjection(visionWidth, lmWidth, options.PerceiverGridSize, options.PerceiverHeads),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown projection kind."),
        };
    }
}
