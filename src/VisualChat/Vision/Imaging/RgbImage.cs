using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Vision.Imaging;

/// <summary>An 8-bit RGB image, pixels interleaved row by row (HWC): <c>Rgb[(y * Width + x) * 3 + c]</c>.</summary>
public sealed class RgbImage
{
    public int Width { get; }
    public int Height { get; }
    public byte[] Rgb { get; }

    public RgbImage(int width, int height, byte[] rgb)
    {
        if (width <= 0 || height <= 0)
            throw new ArgumentOutOfRangeException(nameof(width), $"Image size must be positive, got {width}x{height}.");
        ArgumentNullException.ThrowIfNull(rgb);
        if (rgb.LongLength != 3L * width * height)
            throw new ArgumentException($"Pixel buffer holds {rgb.LongLength} bytes but a {width}x{height} RGB image needs {3L * width * height}.", nameof(rgb));
        Width = width;
        Height = height;
        Rgb = rgb;
    }

    /// <summary>
    /// Channel-first tensor [3, H, W]. Values stay in 0..255 levels whatever the dtype
    /// (uint8 by default; pass <c>ScalarType.Float32</c> for float levels).
    /// </summary>
    public Tensor ToTensor(ScalarType dtype = ScalarType.Byte)
    {
        using var scope = NewDisposeScope();
        var hwc = tensor(Rgb, new long[] { Height, Width, 3 }, ScalarType.Byte);
        var chw = hwc.permute(2, 0, 1).contiguous();
        var result = dtype == ScalarType.Byte ? chw : chw.to_type(dtype);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The pixel at (x, y) as (r, g, b).</summary>
    public (byte R, byte G, byte B) this[int x, int y]
    {
        get
        {
            int i = (y * Width + x) * 3;
            return (Rgb[i], Rgb[i + 1], Rgb[i + 2]);
        }
    }
}
