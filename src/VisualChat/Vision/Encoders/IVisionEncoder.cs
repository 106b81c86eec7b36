using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>
/// A vision tower as the chat model sees it: preprocessed pixels in, a fixed number of feature tokens out.
/// Implementations start frozen: parameters have requires_grad false and <see cref="Encode"/> runs under no_grad,
/// so the result carries no autograd graph; <see cref="Unfreeze"/> makes both trainable and differentiable.
/// </summary>
public interface IVisionEncoder
{
    /// <summary>[N, 3, ImageSize, ImageSize] normalized pixels → [N, OutputTokens, OutputWidth] features (fp32).</summary>
    Tensor Encode(Tensor pixels);

    int OutputTokens { get; }
    int OutputWidth { get; }
    int ImageSize { get; }

    /// <summary>Identifies architecture, size and output selection; the feature cache keys on it so encoders never share entries.</summary>
    string EncoderId { get; }

    /// <summary>The architecture's name in a model folder's <c>visualchat.json</c> (<c>vision_encoder</c>): "clip", "qwen".</summary>
    string Kind { get; }

    /// <summary>The architecture's config (e.g. <see cref="ClipVisionConfig"/>, <see cref="QwenVisionConfig"/>).</summary>
    object Config { get; }

    /// <summary>Writes the config as the <c>config.json</c> of a vision folder.</summary>
    void SaveConfig(string path);

    /// <summary>The preprocessing this architecture is used with when a folder does not say otherwise.</summary>
    ImageProcessorConfig DefaultImageProcessor { get; }

    bool IsFrozen { get; }
    void Freeze();
    void Unfreeze();
}

/// <summary>Shape of what an encoder emits, computable from a config alone (no weights allocated).</summary>
public sealed record VisionOutputDescription(int ImageSize, int PatchGrid, int OutputTokens, int OutputWidth)
{
    public long ElementsPerImage => (long)OutputTokens * OutputWidth;
}
