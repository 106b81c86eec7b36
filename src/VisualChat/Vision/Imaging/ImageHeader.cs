using System.Buffers.Binary;

namespace VisualChat.Vision.Imaging;

public enum ImageFormat
{
    Unknown,
    Jpeg,
    Png,
    Gif,
    Bmp,
}

/// <summary>
/// Format and dimensions read from the first bytes of an image, without decoding pixels,
/// so that oversized images are rejected before any allocation. Also finds a JPEG's EXIF orientation.
/// </summary>
public readonly record struct ImageHeader(ImageFormat Format, int Width, int Height, int ExifOrientation)
{
    /// <summary>Recognises the format from magic bytes only (file names lie: a PNG named .jpg is common).</summary>
    public static ImageFormat DetectFormat(ReadOnlySpan<byte> data)
    {
        if (data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat.Jpeg;
        if (data.Length >= 8 && data[..8].SequenceEqual(PngSignature)) return ImageFormat.Png;
        if (data.Length >= 6 && (data[..6].SequenceEqual("GIF87a"u8) || data[..6].SequenceEqual("GIF89a"u8))) return ImageFormat.Gif;
        if (data.Length >= 2 && data[0] == (byte)'B' && data[1] == (byte)'M') return ImageFormat.Bmp;
        return ImageFormat.Unknown;
    }

    private static ReadOnlySpan<byte> PngSignature => [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>Reads the header of an image file (its first 256 KiB, enough for JPEG metadata before the frame
    /// header); false when the file is unreadable or not a known image.</summary>
    public static bool TryReadFile(string path, out ImageHeader header)
    {
        header = default;
        try
        {
            using var stream = File.OpenRead(path);
            var head = new byte[Math.Min(stream.Length, 256 * 1024)];
            int read = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
            return TryRead(head.AsSpan(0, read), out header);
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Reads format and size; returns false when the header is missing or cut short.</summary>
    public static bool TryRead(ReadOnlySpan<byte> data, out ImageHeader header)
    {
        header = default;
        var format = DetectFormat(data);
        switch (format)
        {
            case ImageFormat.Png:
                // Signature, then the IHDR chunk: length(4) "IHDR" width(4) height(4), big-endian.
                if (data.Length < 24 || !data.Slice(12, 4).SequenceEqual("IHDR"u8)) return false;
                header = new ImageHeader(format, BinaryPrimitives.ReadInt32BigEndian(data[16..]), BinaryPrimitives.ReadInt32BigEndian(data[20..]), 1);
                return true;
            case ImageFormat.Gif:
                if (data.Length < 10) return false;
                header = new ImageHeader(format, BinaryPrimitives.ReadUInt16LittleEndian(data[6..]), BinaryPrimitives.ReadUInt16LittleEndian(data[8..]), 1);
                return true;
            case ImageFormat.Bmp:
                return TryReadBmp(data, out header);
            case ImageFormat.Jpeg:
                return TryReadJpeg(data, out header);
            default:
                return false;
        }
    }

    private static bool TryReadBmp(ReadOnlySpan<byte> data, out ImageHeader header)
    {
        header = default;
        if (data.Length < 26) return false;
        int dibSize = BinaryPrimitives.ReadInt32LittleEndian(data[14..]);
        int width, height;
        if (dibSize == 12)
        {
            // BITMAPCOREHEADER: 16-bit dimensions.
            width = BinaryPrimitives.ReadUInt16LittleEndian(data[18..]);
            height = BinaryPrimitives.ReadUInt16LittleEndian(data[20..]);
        }
        else
        {
            width = BinaryPrimitives.ReadInt32LittleEndian(data[18..]);
            // Negative height marks a top-down bitmap.
            height = Math.Abs(BinaryPrimitives.ReadInt32LittleEndian(data[22..]));
        }
        header = new ImageHeader(ImageFormat.Bmp, width, height, 1);
        return true;
    }

    private static bool TryReadJpeg(ReadOnlySpan<byte> data, out ImageHeader header)
    {
        header = default;
        int orientation = 1;
        int pos = 2;
        while (pos + 4 <= data.Length)
        {
            if (data[pos] != 0xFF) return false;
            byte marker = data[pos + 1];
            if (marker == 0xFF) { pos++; continue; } // fill byte
            if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { pos += 2; continue; } // no payload
            int length = BinaryPrimitives.ReadUInt16BigEndian(data[(pos + 2)..]);
            if (length < 2) return false;
            int payloadStart = pos + 4;
            int payloadLength = length - 2;
            bool isStartOfFrame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
            if (isStartOfFrame)
            {
                // precision(1) height(2) width(2)
                if (payloadStart + 5 > data.Length) return false;
                int height = BinaryPrimitives.ReadUInt16BigEndian(data[(payloadStart + 1)..]);
                int width = BinaryPrimitives.ReadUInt16BigEndian(data[(payloadStart + 3)..]);
                header = new ImageHeader(ImageFormat.Jpeg, width, height, orientation);
                return true;
            }
            if (marker == 0xE1 && payloadStart + payloadLength <= data.Length)
            {
                var exif = VisualChat.Vision.Imaging.ExifOrientation.ReadFromApp1(data.Slice(payloadStart, payloadLength));
                if (exif is int value) orientation = value;
            }
            if (marker == 0xDA) return false; // scan data before any frame header
            pos = payloadStart + payloadLength;
        }
        return false;
    }
}
