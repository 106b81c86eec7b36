namespace VisualChat.Vision.Imaging;

/// <summary>An image could not be decoded: empty, truncated, not an image, or an unsupported format.</summary>
public class ImageDecodeException : Exception
{
    /// <summary>Where the bytes came from (a path, "base64 string", "data URI", ...).</summary>
    public string ImageSource { get; }
    public ImageFormat DetectedFormat { get; }

    public ImageDecodeException(string source, ImageFormat detectedFormat, string message, Exception? inner = null)
        : base(message, inner)
    {
        ImageSource = source;
        DetectedFormat = detectedFormat;
    }
}

/// <summary>The header announces more pixels than <see cref="ImageLoadOptions.MaxPixels"/> allows; nothing was decoded.</summary>
public sealed class ImageTooLargeException : ImageDecodeException
{
    public int Width { get; }
    public int Height { get; }
    public long MaxPixels { get; }

    public ImageTooLargeException(string source, ImageFormat format, int width, int height, long maxPixels)
        : base(source, format,
            $"Image '{source}' ({format}) declares {width}x{height} = {(long)width * height:N0} pixels, more than the limit of {maxPixels:N0}. " +
            $"Raise ImageLoadOptions.MaxPixels if the file is trusted.")
    {
        Width = width;
        Height = height;
        MaxPixels = maxPixels;
    }
}
