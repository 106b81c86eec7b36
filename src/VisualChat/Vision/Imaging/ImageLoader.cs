using StbImageSharp;

namespace VisualChat.Vision.Imaging;

/// <summary>
/// Decodes JPEG (baseline and progressive), PNG (palette, gray, gray+alpha, RGB(A), 16-bit), BMP and GIF (first frame)
/// into <see cref="RgbImage"/>: format from magic bytes, size limit checked from the header before decoding,
/// alpha composited on white (or dropped), gray expanded to RGB, EXIF orientation applied.
/// </summary>
public static class ImageLoader
{
    /// <summary>Loads an image file.</summary>
    /// <exception cref="FileNotFoundException">The path does not exist.</exception>
    /// <exception cref="ImageDecodeException">Empty, truncated, unknown or undecodable content, or too many pixels.</exception>
    public static RgbImage Load(string path, ImageLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Image file '{path}' does not exist (full path: {Path.GetFullPath(path)}).", path);
        return Load(File.ReadAllBytes(path), path, options);
    }

    /// <summary>Loads a path, or a <c>data:image/...;base64,</c> URI when the string starts with "data:".</summary>
    public static RgbImage LoadPathOrDataUri(string pathOrUri, ImageLoadOptions? options = null) =>
        pathOrUri.StartsWith("data:", StringComparison.OrdinalIgnoreCase) ? LoadDataUri(pathOrUri, options) : Load(pathOrUri, options);

    /// <summary>Loads an image from a stream (read to its end).</summary>
    public static RgbImage Load(Stream stream, string sourceName = "stream", ImageLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        return Load(buffer.ToArray(), sourceName, options);
    }

    /// <summary>Loads an image from base64 text (no data-URI prefix; whitespace is ignored).</summary>
    public static RgbImage LoadBase64(string base64, ImageLoadOptions? options = null, string sourceName = "base64 string")
    {
        ArgumentNullException.ThrowIfNull(base64);
        byte[] bytes;
        try
        {
            bytes = Convert.FromBase64String(base64);
        }
        catch (FormatException e)
        {
            throw new ImageDecodeException(sourceName, ImageFormat.Unknown, $"Image {sourceName} is not valid base64: {e.Message}", e);
        }
        return Load(bytes, sourceName, options);
    }

    /// <summary>Loads a <c>data:[mime];base64,PAYLOAD</c> URI. The declared MIME type is informational; the bytes decide the format.</summary>
    public static RgbImage LoadDataUri(string dataUri, ImageLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(dataUri);
        int comma = dataUri.IndexOf(',');
        if (!dataUri.StartsWith("data:", StringComparison.OrdinalIgnoreCase) || comma < 0)
        {
            throw new ImageDecodeException("data URI", ImageFormat.Unknown,
                $"'{Preview(dataUri)}' is not a data URI; expected 'data:image/<type>;base64,<payload>'.");
        }

        var meta = dataUri[5..comma];
        var source = $"data URI ({(meta.Length == 0 ? "no media type" : meta)})";
        if (!meta.EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
        {
            throw new ImageDecodeException(source, ImageFormat.Unknown,
                $"Image {source} is not base64-encoded; only 'data:<mime>;base64,<payload>' URIs are supported.");
        }

        return LoadBase64(dataUri[(comma + 1)..], options, source);
    }

    /// <summary>Decodes encoded image bytes; <paramref name="sourceName"/> names the origin in errors.</summary>
    public static RgbImage Load(byte[] data, string sourceName = "byte buffer", ImageLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        options ??= ImageLoadOptions.Default;
        if (data.Length == 0)
            throw new ImageDecodeException(sourceName, ImageFormat.Unknown, $"Image '{sourceName}' is empty (0 bytes).");

        var format = ImageHeader.DetectFormat(data);
        if (format == ImageFormat.Unknown)
        {
            throw new ImageDecodeException(sourceName, format,
                $"Image '{sourceName}' is not a JPEG, PNG, GIF or BMP (first bytes: {Convert.ToHexString(data, 0, Math.Min(8, data.Length))}).");
        }

        if (!ImageHeader.TryRead(data, out var header))
            throw new ImageDecodeException(sourceName, format, $"Image '{sourceName}' looks like {format} but its header is truncated or malformed.");
        if (header.Width <= 0 || header.Height <= 0)
            throw new ImageDecodeException(sourceName, format, $"Image '{sourceName}' ({format}) declares an invalid size {header.Width}x{header.Height}.");
        if ((long)header.Width * header.Height > options.MaxPixels)
            throw new ImageTooLargeException(sourceName, format, header.Width, header.Height, options.MaxPixels);
        if (format == ImageFormat.Jpeg && !JpegHasEndOfImage(data))
            throw new ImageDecodeException(sourceName, format, $"Image '{sourceName}' (JPEG) is truncated: no end-of-image marker after the scan data.");

        var image = Decode(data, sourceName, format, options.AlphaMode);
        if (options.ApplyExifOrientation && header.ExifOrientation != 1)
            image = ExifOrientation.Apply(image, header.ExifOrientation);
        return image;
    }

    private static RgbImage Decode(byte[] data, string sourceName, ImageFormat format, AlphaMode alphaMode)
    {
        ImageResult result;
        try
        {
            var info = ImageInfo.FromStream(new MemoryStream(data, writable: false));
            bool hasAlpha = info is { ColorComponents: ColorComponents.GreyAlpha or ColorComponents.RedGreenBlueAlpha };
            result = ImageResult.FromMemory(data, hasAlpha ? ColorComponents.RedGreenBlueAlpha : ColorComponents.RedGreenBlue);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new ImageDecodeException(sourceName, format, $"Image '{sourceName}' ({format}) could not be decoded: {e.Message}", e);
        }
        if (result?.Data is null || result.Width <= 0 || result.Height <= 0)
            throw new ImageDecodeException(sourceName, format, $"Image '{sourceName}' ({format}) could not be decoded.");

        if (result.Comp == ColorComponents.RedGreenBlue)
            return new RgbImage(result.Width, result.Height, result.Data);
        return new RgbImage(result.Width, result.Height, RgbaToRgb(result.Data, alphaMode));
    }

    /// <summary>
    /// PIL's <c>Image.alpha_composite(white, rgba)</c> arithmetic (AlphaComposite.c, 7 extra precision bits,
    /// rounded division by 255) specialised to an opaque white background, so results match PIL exactly.
    /// </summary>
    internal static byte[] RgbaToRgb(byte[] rgba, AlphaMode alphaMode)
    {
        int pixels = rgba.Length / 4;
        var rgb = new byte[pixels * 3];
        for (int p = 0; p < pixels; p++)
        {
            int a = rgba[p * 4 + 3];
            for (int c = 0; c < 3; c++)
            {
                int v = rgba[p * 4 + c];
                if (alphaMode == AlphaMode.CompositeOnWhite && a != 255)
                {
                    uint tmp = (uint)(v * a + 255 * (255 - a)) * 128u + (0x80u << 7);
                    v = (int)((((tmp >> 8) + tmp) >> 8) >> 7);
                }
                rgb[p * 3 + c] = (byte)v;
            }
        }
        return rgb;
    }

    /// <summary>
    /// Entropy-coded data never contains FF D9 (0xFF bytes are stuffed), so a JPEG without EOI after its first
    /// scan was cut short. The decoder would otherwise pad the missing data silently.
    /// </summary>
    private static bool JpegHasEndOfImage(byte[] data)
    {
        int pos = 2;
        while (pos + 4 <= data.Length)
        {
            if (data[pos] != 0xFF) return false;
            byte marker = data[pos + 1];
            if (marker == 0xFF) { pos++; continue; }
            if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { pos += 2; continue; }
            int length = (data[pos + 2] << 8) | data[pos + 3];
            if (marker == 0xDA)
                return pos + 2 + length <= data.Length && data.AsSpan(pos + 2 + length).IndexOf(EndOfImageMarker) >= 0;
            pos += 2 + length;
        }
        return false;
    }

    private static ReadOnlySpan<byte> EndOfImageMarker => [0xFF, 0xD9];

    private static string Preview(string s) => s.Length <= 40 ? s : s[..40] + "...";
}
