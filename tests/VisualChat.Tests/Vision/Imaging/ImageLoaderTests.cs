using System.Buffers.Binary;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;

namespace VisualChat.Tests.Vision.Imaging;

public class ImageLoaderTests
{
    private const string RgbaPngNamedJpg = "eval/eval_data/images/friends/wrong-count1.jpg";
    private const string PalettePng = "eval/eval_data/images/cats/cat.png";
    private const string BaselineJpeg = "eval/eval_data/images/singles/extreme_ironing.jpg";

    public static TheoryData<string> EvalImages() => new(ImagingTestData.AllEvalImages());

    public static TheoryData<string> FormatFixtureNames() => new(ImagingTestData.FormatFixtures.Keys.OrderBy(k => k));

    [Fact]
    public void ReferenceTableCoversEveryImagePresent()
    {
        var present = ImagingTestData.AllEvalImages().ToList();
        Assert.NotEmpty(present);
        Assert.Equal(present.OrderBy(p => p), ImagingTestData.PilReference.Keys.OrderBy(p => p));
    }

    [Theory]
    [MemberData(nameof(EvalImages))]
    public void EvalImageDecodesToPilSizeAfterExifOrientation(string relative)
    {
        var reference = ImagingTestData.PilReference[relative];
        var bytes = File.ReadAllBytes(ImagingTestData.EvalImage(relative));
        Assert.True(ImageHeader.TryRead(bytes, out var header));
        Assert.Equal(reference.Format == "JPEG" ? ImageFormat.Jpeg : ImageFormat.Png, header.Format);
        Assert.Equal(reference.Orientation, header.ExifOrientation);

        var image = ImagingTestData.LoadEvalImage(relative);
        Assert.Equal((reference.Width, reference.Height), (image.Width, image.Height));
        Assert.Equal(3 * image.Width * image.Height, image.Rgb.Length);
    }

    [Fact]
    public void RgbaPngNamedJpgIsDetectedAsPngAndLoadsAsRgb()
    {
        var path = ImagingTestData.EvalImage(RgbaPngNamedJpg);
        Assert.Equal(ImageFormat.Png, ImageHeader.DetectFormat(File.ReadAllBytes(path)));
        var composited = ImageLoader.Load(path);
        var dropped = ImageLoader.Load(path, new ImageLoadOptions(AlphaMode: AlphaMode.Drop));
        Assert.Equal((1536, 864), (composited.Width, composited.Height));
        // This file's alpha is fully opaque (checked with PIL), so both modes agree.
        Assert.Equal(dropped.Rgb, composited.Rgb);
    }

    [Theory]
    [MemberData(nameof(FormatFixtureNames))]
    public void SmallFormatFixturesDecodeExactlyLikePil(string name)
    {
        var fixture = ImagingTestData.FormatFixtures[name];
        var image = ImageLoader.LoadBase64(fixture.Base64);
        Assert.Equal((fixture.Width, fixture.Height), (image.Width, image.Height));
        Assert.Equal(fixture.RgbHex, Convert.ToHexStringLower(image.Rgb));
    }

    [Fact]
    public void AlphaCompositesOnWhiteByDefaultAndCanBeDropped()
    {
        var fixture = ImagingTestData.FormatFixtures["rgba_png"];
        var composited = ImageLoader.LoadBase64(fixture.Base64);
        var dropped = ImageLoader.LoadBase64(fixture.Base64, new ImageLoadOptions(AlphaMode: AlphaMode.Drop));
        Assert.Equal(fixture.RgbHex, Convert.ToHexStringLower(composited.Rgb));
        Assert.Equal(fixture.RgbDropAlphaHex, Convert.ToHexStringLower(dropped.Rgb));
        // Pixel (0,0) has alpha 0: pure white when composited.
        Assert.Equal(((byte)255, (byte)255, (byte)255), composited[0, 0]);
        Assert.NotEqual(composited.Rgb, dropped.Rgb);
    }

    [Fact]
    public void PalettePngAndProgressiveJpegsDecode()
    {
        Assert.Equal("P", ImagingTestData.PilReference[PalettePng].Mode);
        var palette = ImageLoader.Load(ImagingTestData.EvalImage(PalettePng));
        Assert.Equal((1000, 667), (palette.Width, palette.Height));

        var progressive = ImagingTestData.PilReference.Where(kv => kv.Value.Progressive).Select(kv => kv.Key).ToList();
        Assert.True(progressive.Count >= 3, "the eval set should contain progressive JPEGs");
        foreach (var relative in progressive)
        {
            var image = ImageLoader.Load(ImagingTestData.EvalImage(relative));
            Assert.Equal(ImagingTestData.PilReference[relative].Width, image.Width);
            // A decoder that stops after the first progressive scan yields a flat, blurry image; check there is detail.
            Assert.True(image.Rgb.Distinct().Count() > 200, $"{relative} decoded with too few distinct levels");
        }
    }

    [Fact]
    public void Base64AndDataUriLoadEqualToFile()
    {
        foreach (var relative in new[] { BaselineJpeg, PalettePng })
        {
            var path = ImagingTestData.EvalImage(relative);
            var fromFile = ImageLoader.Load(path);
            var base64 = Convert.ToBase64String(File.ReadAllBytes(path));
            var fromBase64 = ImageLoader.LoadBase64(base64);
            var fromDataUri = ImageLoader.LoadDataUri("data:image/png;base64," + base64);
            var viaDispatch = ImageLoader.LoadPathOrDataUri("data:image/jpeg;base64," + base64);
            using var stream = File.OpenRead(path);
            var fromStream = ImageLoader.Load(stream, path);
            foreach (var other in new[] { fromBase64, fromDataUri, viaDispatch, fromStream })
            {
                Assert.Equal((fromFile.Width, fromFile.Height), (other.Width, other.Height));
                Assert.Equal(fromFile.Rgb, other.Rgb);
            }
        }
    }

    [Fact]
    public void MissingFileNamesThePath()
    {
        var path = Path.Combine(Path.GetTempPath(), "visualchat-no-such-image-" + Guid.NewGuid() + ".png");
        var error = Assert.Throws<FileNotFoundException>(() => ImageLoader.Load(path));
        Assert.Contains(path, error.Message);
        Assert.Equal(path, error.FileName);
    }

    [Fact]
    public void EmptyFileNamesThePath()
    {
        var path = WriteTemp([]);
        try
        {
            var error = Assert.Throws<ImageDecodeException>(() => ImageLoader.Load(path));
            Assert.Contains(path, error.Message);
            Assert.Contains("empty", error.Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void TruncatedJpegIsRejectedNamingSourceAndFormat()
    {
        var bytes = File.ReadAllBytes(ImagingTestData.EvalImage(BaselineJpeg));
        var path = WriteTemp(bytes[..(bytes.Length / 2)]);
        try
        {
            var error = Assert.Throws<ImageDecodeException>(() => ImageLoader.Load(path));
            Assert.Contains(path, error.Message);
            Assert.Contains("JPEG", error.Message);
            Assert.Equal(ImageFormat.Jpeg, error.DetectedFormat);
            Assert.Equal(path, error.ImageSource);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void TruncatedPngIsRejected()
    {
        var bytes = File.ReadAllBytes(ImagingTestData.EvalImage(PalettePng));
        var error = Assert.Throws<ImageDecodeException>(() => ImageLoader.Load(bytes[..(bytes.Length / 3)], "cut.png"));
        Assert.Contains("cut.png", error.Message);
        Assert.Equal(ImageFormat.Png, error.DetectedFormat);
    }

    [Fact]
    public void RandomBytesAreRejectedNamingSource()
    {
        var random = new byte[4096];
        new Random(1234).NextBytes(random);
        random[0] = 0x13; // make sure no magic matches by chance
        var error = Assert.Throws<ImageDecodeException>(() => ImageLoader.Load(random, "noise.bin"));
        Assert.Contains("noise.bin", error.Message);
        Assert.Equal(ImageFormat.Unknown, error.DetectedFormat);

        var badUri = Assert.Throws<ImageDecodeException>(() => ImageLoader.LoadDataUri("data:image/png;base64,@@@not-base64@@@"));
        Assert.Contains("data URI", badUri.Message);
    }

    [Fact]
    public void TooManyPixelsIsRejectedFromThePngHeaderBeforeDecoding()
    {
        // Only the signature and IHDR: 100000 x 100000 would need 30 GB if decoded.
        var header = new byte[33];
        new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }.CopyTo(header, 0);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(8), 13);
        "IHDR"u8.CopyTo(header.AsSpan(12));
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(16), 100_000);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(20), 100_000);
        header[24] = 8; header[25] = 2;
        var error = Assert.Throws<ImageTooLargeException>(() => ImageLoader.Load(header, "bomb.png"));
        Assert.Contains("bomb.png", error.Message);
        Assert.Contains("100000x100000", error.Message);
        Assert.Equal(ImageLoadOptions.PilMaxImagePixels, error.MaxPixels);
    }

    [Fact]
    public void MaxPixelsIsConfigurableAndReadFromJpegFrameHeader()
    {
        var path = ImagingTestData.EvalImage(BaselineJpeg); // 570 x 380
        var error = Assert.Throws<ImageTooLargeException>(() => ImageLoader.Load(path, new ImageLoadOptions(MaxPixels: 570 * 380 - 1)));
        Assert.Equal((570, 380), (error.Width, error.Height));
        Assert.Contains(path, error.Message);
        Assert.Equal(570, ImageLoader.Load(path, new ImageLoadOptions(MaxPixels: 570 * 380)).Width);
    }

    [Fact]
    public void HeadersOfEveryFormatGiveDimensions()
    {
        foreach (var (name, fixture) in ImagingTestData.FormatFixtures)
        {
            Assert.True(ImageHeader.TryRead(Convert.FromBase64String(fixture.Base64), out var header), name);
            Assert.Equal((fixture.Width, fixture.Height), (header.Width, header.Height));
        }
    }

    [Theory]
    [InlineData(6, false)]
    [InlineData(8, true)]
    [InlineData(3, false)]
    public void ExifOrientationInjectedIntoARealJpegIsApplied(int orientation, bool littleEndian)
    {
        var original = File.ReadAllBytes(ImagingTestData.EvalImage(BaselineJpeg));
        var rotatedBytes = InjectExifOrientation(original, orientation, littleEndian);
        Assert.True(ImageHeader.TryRead(rotatedBytes, out var header));
        Assert.Equal(orientation, header.ExifOrientation);

        var raw = ImageLoader.Load(rotatedBytes, "rotated.jpg", new ImageLoadOptions(ApplyExifOrientation: false));
        var shown = ImageLoader.Load(rotatedBytes, "rotated.jpg");
        Assert.Equal((570, 380), (raw.Width, raw.Height));
        int w = raw.Width, h = raw.Height;
        if (orientation == 3) Assert.Equal((w, h), (shown.Width, shown.Height));
        else Assert.Equal((h, w), (shown.Width, shown.Height));
        foreach (var (sx, sy) in new[] { (0, 0), (w - 1, 0), (0, h - 1), (123, 45), (w - 1, h - 1) })
        {
            // Where source pixel (sx, sy) lands when displayed.
            (int dx, int dy) = orientation switch
            {
                6 => (h - 1 - sy, sx),     // rotate 90 clockwise
                8 => (sy, w - 1 - sx),     // rotate 90 counter-clockwise
                _ => (w - 1 - sx, h - 1 - sy),
            };
            Assert.Equal(raw[sx, sy], shown[dx, dy]);
        }
    }

    [Fact]
    public void AllEightOrientationsMatchPilTransposes()
    {
        // 3x2 image with distinct pixels 0..5; expected layouts from PIL's exif_transpose on the same image.
        var image = new RgbImage(3, 2, Enumerable.Range(0, 6).SelectMany(v => new[] { (byte)v, (byte)v, (byte)v }).ToArray());
        var expected = new Dictionary<int, (int W, int H, int[] Order)>
        {
            [1] = (3, 2, [0, 1, 2, 3, 4, 5]),
            [2] = (3, 2, [2, 1, 0, 5, 4, 3]),
            [3] = (3, 2, [5, 4, 3, 2, 1, 0]),
            [4] = (3, 2, [3, 4, 5, 0, 1, 2]),
            [5] = (2, 3, [0, 3, 1, 4, 2, 5]),
            [6] = (2, 3, [3, 0, 4, 1, 5, 2]),
            [7] = (2, 3, [5, 2, 4, 1, 3, 0]),
            [8] = (2, 3, [2, 5, 1, 4, 0, 3]),
        };
        foreach (var (orientation, (ew, eh, order)) in expected)
        {
            var result = ExifOrientation.Apply(image, orientation);
            Assert.Equal((ew, eh), (result.Width, result.Height));
            Assert.Equal(order, Enumerable.Range(0, order.Length).Select(i => (int)result.Rgb[i * 3]).ToArray());
        }
    }

    [Fact]
    public void ToTensorIsChannelFirst()
    {
        var image = new RgbImage(2, 1, [1, 2, 3, 4, 5, 6]);
        using var bytes = image.ToTensor();
        using var floats = image.ToTensor(TorchSharp.torch.ScalarType.Float32);
        Assert.Equal(new long[] { 3, 1, 2 }, bytes.shape);
        Assert.Equal(TorchSharp.torch.ScalarType.Byte, bytes.dtype);
        Assert.Equal(new byte[] { 1, 4, 2, 5, 3, 6 }, bytes.data<byte>().ToArray());
        Assert.Equal(new float[] { 1, 4, 2, 5, 3, 6 }, floats.data<float>().ToArray());
    }

    private static string WriteTemp(byte[] bytes)
    {
        var path = Path.Combine(Path.GetTempPath(), "visualchat-image-test-" + Guid.NewGuid() + ".jpg");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Inserts an APP1 "Exif" segment with only IFD0/Orientation right after SOI.</summary>
    private static byte[] InjectExifOrientation(byte[] jpeg, int orientation, bool littleEndian)
    {
        var tiff = new byte[8 + 2 + 12 + 4];
        void U16(int at, int v) { if (littleEndian) BinaryPrimitives.WriteUInt16LittleEndian(tiff.AsSpan(at), (ushort)v); else BinaryPrimitives.WriteUInt16BigEndian(tiff.AsSpan(at), (ushort)v); }
        void U32(int at, int v) { if (littleEndian) BinaryPrimitives.WriteInt32LittleEndian(tiff.AsSpan(at), v); else BinaryPrimitives.WriteInt32BigEndian(tiff.AsSpan(at), v); }
        tiff[0] = tiff[1] = (byte)(littleEndian ? 'I' : 'M');
        U16(2, 42);
        U32(4, 8);
        U16(8, 1);            // one entry
        U16(10, 0x0112);      // Orientation
        U16(12, 3);           // SHORT
        U32(14, 1);           // count
        U16(18, orientation); // value, left-justified
        var payload = "Exif\0\0"u8.ToArray().Concat(tiff).ToArray();
        var segment = new byte[4 + payload.Length];
        segment[0] = 0xFF; segment[1] = 0xE1;
        BinaryPrimitives.WriteUInt16BigEndian(segment.AsSpan(2), (ushort)(payload.Length + 2));
        payload.CopyTo(segment, 4);
        return jpeg[..2].Concat(segment).Concat(jpeg[2..]).ToArray();
    }
}
