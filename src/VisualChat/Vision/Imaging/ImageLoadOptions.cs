namespace VisualChat.Vision.Imaging;

/// <summary>What to do with an alpha channel when turning an image into RGB.</summary>
public enum AlphaMode
{
    /// <summary>Blend over an opaque white background (what transformers' convert_to_rgb does), exactly as PIL's alpha_composite rounds.</summary>
    CompositeOnWhite,
    /// <summary>Keep the colour channels and ignore alpha (PIL's <c>image.convert("RGB")</c>).</summary>
    Drop,
}

/// <summary>How <see cref="ImageLoader"/> decodes an image.</summary>
/// <param name="AlphaMode">Alpha handling; white compositing by default.</param>
/// <param name="MaxPixels">Largest width*height accepted, checked from the header before decoding (PIL's default limit).</param>
/// <param name="ApplyExifOrientation">Rotate/flip JPEGs according to their EXIF Orientation tag (like PIL's exif_transpose).</param>
public sealed record ImageLoadOptions(
    AlphaMode AlphaMode = AlphaMode.CompositeOnWhite,
    long MaxPixels = ImageLoadOptions.PilMaxImagePixels,
    bool ApplyExifOrientation = true)
{
    /// <summary>PIL's <c>Image.MAX_IMAGE_PIXELS</c>.</summary>
    public const long PilMaxImagePixels = 89_478_485;

    public static ImageLoadOptions Default { get; } = new();
}
