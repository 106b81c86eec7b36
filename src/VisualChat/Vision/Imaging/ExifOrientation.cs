using System.Buffers.Binary;

namespace VisualChat.Vision.Imaging;

/// <summary>EXIF Orientation (tag 0x0112 of IFD0) parsing and the matching pixel transform, as PIL's <c>ImageOps.exif_transpose</c>.</summary>
public static class ExifOrientation
{
    private const ushort OrientationTag = 0x0112;

    /// <summary>Orientation 1-8 from a JPEG APP1 payload ("Exif\0\0" + TIFF), or null when absent or malformed.</summary>
    public static int? ReadFromApp1(ReadOnlySpan<byte> app1)
    {
        if (app1.Length < 14 || !app1[..6].SequenceEqual("Exif\0\0"u8)) return null;
        var tiff = app1[6..];
        bool littleEndian;
        if (tiff[0] == (byte)'I' && tiff[1] == (byte)'I') littleEndian = true;
        else if (tiff[0] == (byte)'M' && tiff[1] == (byte)'M') littleEndian = false;
        else return null;
        if (U16(tiff[2..], littleEndian) != 42) return null;
        long ifdOffset = U32(tiff[4..], littleEndian);
        if (ifdOffset < 8 || ifdOffset + 2 > tiff.Length) return null;
        int entryCount = U16(tiff[(int)ifdOffset..], littleEndian);
        for (int i = 0; i < entryCount; i++)
        {
            int entry = (int)ifdOffset + 2 + i * 12;
            if (entry + 12 > tiff.Length) return null;
            if (U16(tiff[entry..], littleEndian) != OrientationTag) continue;
            int type = U16(tiff[(entry + 2)..], littleEndian);
            // SHORT (3) is the specified type; LONG (4) shows up in the wild.
            int value = type == 4 ? (int)U32(tiff[(entry + 8)..], littleEndian) : U16(tiff[(entry + 8)..], littleEndian);
            return value is >= 1 and <= 8 ? value : null;
        }
        return null;
    }

    private static ushort U16(ReadOnlySpan<byte> s, bool le) => le ? BinaryPrimitives.ReadUInt16LittleEndian(s) : BinaryPrimitives.ReadUInt16BigEndian(s);
    private static uint U32(ReadOnlySpan<byte> s, bool le) => le ? BinaryPrimitives.ReadUInt32LittleEndian(s) : BinaryPrimitives.ReadUInt32BigEndian(s);

    /// <summary>
    /// Returns the image as it should be displayed: 2 mirror, 3 rotate 180, 4 flip vertically, 5 transpose,
    /// 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise. Orientation 1 returns the input.
    /// </summary>
    public static RgbImage Apply(RgbImage image, int orientation)
    {
        if (orientation is < 1 or > 8)
            throw new ArgumentOutOfRangeException(nameof(orientation), $"EXIF orientation must be 1..8, got {orientation}.");
        if (orientation == 1) return image;
        int w = image.Width, h = image.Height;
        bool swaps = orientation >= 5;
        int outW = swaps ? h : w, outH = swaps ? w : h;
        var src = image.Rgb;
        var dst = new byte[src.Length];
        for (int oy = 0; oy < outH; oy++)
        {
            for (int ox = 0; ox < outW; ox++)
            {
                (int sx, int sy) = orientation switch
                {
                    2 => (w - 1 - ox, oy),
                    3 => (w - 1 - ox, h - 1 - oy),
                    4 => (ox, h - 1 - oy),
                    5 => (oy, ox),
                    6 => (oy, h - 1 - ox),
                    7 => (w - 1 - oy, h - 1 - ox),
                    _ => (w - 1 - oy, ox),
                };
                int s = (sy * w + sx) * 3, d = (oy * outW + ox) * 3;
                dst[d] = src[s];
                dst[d + 1] = src[s + 1];
                dst[d + 2] = src[s + 2];
            }
        }
        return new RgbImage(outW, outH, dst);
    }
}
