using static TorchSharp.torch;

namespace VisualChat.Vision;

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

    /// <summary>The preprocessing the encoder expects when its folder names none (CLIP's recipe at <see cref="ImageSize"/>).</summary>
    ImageProcessorConfig DefaultImageProcessor => ImageProcessorConfig.ForImageSize(ImageSize);

    bool IsFrozen { get; }
    void Freeze();
    void Unfreeze();
}

/// <summary>Shape of what an encoder emits, computable from a config alone (no weights allocated).</summary>
public sealed record VisionOutputDescription(int ImageSize, int PatchGrid, int OutputTokens, int OutputWidth)
{
    public long ElementsPerImage => (long)OutputTokens * OutputWidth;
}
