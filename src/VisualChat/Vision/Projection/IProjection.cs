using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Vision.Projection;

/// <summary>DeepSpeed-VisualChat's <c>--vis_proj</c> choices, plus LLaVA-1.5's two-layer GELU MLP.</summary>
public enum ProjectionKind
{
    Baseline,
    Vit,
    Perceiver,
    /// <summary>LLaVA-1.5's <c>mlp2x_gelu</c> (Linear → GELU → Linear).</summary>
    Mlp2xGelu,
}

/// <summary>
/// Trainable map from vision-encoder features [N, T_in, visionWidth] to language-model embeddings
/// [N, T_out, lmWidth]. Implementations are TorchSharp modules whose state_dict() keys are DSVC's keys
/// relative to its <c>projection</c> attribute (a full DSVC checkpoint prefixes them with "projection.").
/// </summary>
public interface IProjection
{
    ProjectionKind Kind { get; }
    int InputWidth { get; }
    int OutputWidth { get; }

    /// <summary>Tokens produced for <paramref name="inputTokens"/> encoder tokens (throws where the kind cannot take that many).</summary>
    int OutputTokens(int inputTokens);

    Tensor Project(Tensor visionFeatures);
}

/// <summary>Settings only some kinds use.</summary>
/// <param name="VitLayerConfig">
/// Vit: the CLIP config whose heads, intermediate size, activation and eps shape the extra CLIP encoder layer; its
/// hidden size is replaced by the vision width. DSVC passes the encoder's own config (for its Qwen encoder, the
/// CLIP-bigG config with hidden size 4096: 16 heads, 8192 MLP, gelu, eps 1e-5).</param>
/// <param name="PerceiverGridSize">Perceiver: query grid side; DSVC hard-codes 16 (256 queries).</param>
/// <param name="PerceiverHeads">Perceiver: attention heads; null means DSVC's lmWidth / 128.</param>
public sealed record ProjectionOptions(
    ClipVisionConfig? VitLayerConfig = null,
    int PerceiverGridSize = 16,
    int? PerceiverHeads = null);
