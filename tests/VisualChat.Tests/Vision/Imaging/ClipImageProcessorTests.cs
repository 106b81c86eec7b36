using System.Security.Cryptography;
using TorchSharp;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Imaging;

/// <summary>
/// Compares with HF CLIPImageProcessor's arithmetic run on PIL (tools/make_pil_reference.py).
/// Lossless PNGs decode identically to PIL, so their outputs must match bit for bit. JPEGs decode with stb_image
/// instead of libjpeg (up to 3 levels apart per pixel), so their spot pixels get 4 levels and channel means 0.005.
/// </summary>
public class ClipImageProcessorTests
{
    private const int JpegPixelTolerance = 4;
    private const double JpegChannelMeanTolerance = 0.005;
    private static readonly string[] LosslessImages = ["eval/eval_data/images/cats/cat.png", "eval/eval_data/images/friends/wrong-count1.jpg"];

    public static TheoryData<string, int> EvalImagesAndSizes()
    {
        var data = new TheoryData<string, int>();
        foreach (var image in ImagingTestData.AllEvalImages())
        {
            foreach (var size in new[] { 224, 448 })
                data.Add(image, size);
        }

        return data;
    }

    private static ImageProcessorConfig ConfigFor(int size) => size == 224 ? ImageProcessorConfig.Clip224 : ImageProcessorConfig.QwenVL448;

    [Theory]
    [MemberData(nameof(EvalImagesAndSizes))]
    public void PreprocessingMatchesPilReference(string relative, int size)
    {
        var reference = ImagingTestData.PilReference[relative];
        var expected = size == 224 ? reference.Clip224 : reference.Clip448;
        var processor = new ClipImageProcessor(ConfigFor(size));
        var image = ImagingTestData.LoadEvalImage(relative);

        Assert.Equal((expected.ResizedHeight, expected.ResizedWidth), processor.Config.ResizeOutputSize(image.Height, image.Width));
        var crop = processor.ResizeAndCrop(image);
        bool lossless = LosslessImages.Contains(relative);
        if (lossless)
        {
            Assert.Equal(expected.CropSha256, Convert.ToHexStringLower(SHA256.HashData(crop.Rgb)));
            Assert.Equal(expected.CropLevelSum, crop.Rgb.Sum(b => (long)b));
        }
        foreach (var (at, rgb) in expected.Pixels)
        {
            var yx = at.Split(',').Select(int.Parse).ToArray();
            var actual = crop[yx[1], yx[0]];
            int tolerance = lossless ? 0 : JpegPixelTolerance;
            Assert.InRange(actual.R, rgb[0] - tolerance, rgb[0] + tolerance);
            Assert.InRange(actual.G, rgb[1] - tolerance, rgb[1] + tolerance);
            Assert.InRange(actual.B, rgb[2] - tolerance, rgb[2] + tolerance);
        }

        using var scope = NewDisposeScope();
        var output = processor.Preprocess(image);
        Assert.Equal(new long[] { 3, size, size }, output.shape);
        Assert.Equal(ScalarType.Float32, output.dtype);
        var means = output.to_type(ScalarType.Float64).mean([1, 2]).data<double>().ToArray();
        for (int c = 0; c < 3; c++)
        {
            Assert.True(Math.Abs(means[c] - expected.ChannelMean[c]) <= (lossless ? 1e-6 : JpegChannelMeanTolerance),
                $"{relative} @{size} channel {c}: mean {means[c]} vs PIL {expected.ChannelMean[c]}");
        }
    }

    [Fact]
    public void NormalisationFollowsNumpyFloat32Arithmetic()
    {
        var processor = new ClipImageProcessor(ImageProcessorConfig.Clip224);
        var image = new RgbImage(224, 224, Enumerable.Repeat((byte)200, 224 * 224 * 3).ToArray());
        using var output = processor.Preprocess(image);
        var values = output.data<float>().ToArray();
        for (int c = 0; c < 3; c++)
        {
            float expected = ((float)(200 * (1.0 / 255)) - ImageProcessorConfig.OpenAiClipMean[c]) / ImageProcessorConfig.OpenAiClipStd[c];
            Assert.Equal(expected, values[c * 224 * 224]);
        }
        Assert.Equal(1.1274228f, values[0], 1e-6f); // (200/255 - 0.48145466) / 0.26862954
    }

    [Fact]
    public void BatchEqualsSingleImagesStacked()
    {
        var processor = new ClipImageProcessor(ImageProcessorConfig.Clip224);
        var images = new[] { "eval/eval_data/images/cats/cat.png", "eval/eval_data/images/singles/202160027_b319c4166e.jpg", "eval/eval_data/images/singles/extreme_ironing.jpg" }
            .Select(ImagingTestData.LoadEvalImage).ToList();
        using var scope = NewDisposeScope();
        var batch = processor.Preprocess(images);
        Assert.Equal(new long[] { 3, 3, 224, 224 }, batch.shape);
        for (int i = 0; i < images.Count; i++)
            Assert.True(batch[i].equal(processor.Preprocess(images[i])).all().item<bool>(), $"batch item {i} differs from the single-image result");
    }

    [Fact]
    public void BatchWithoutCropRejectsMixedSizesNamingTheImage()
    {
        var config = ImageProcessorConfig.Clip224;
        config.DoCenterCrop = false;
        var processor = new ClipImageProcessor(config);
        var square = new RgbImage(10, 10, new byte[300]);
        var wide = new RgbImage(20, 10, new byte[600]);
        var error = Assert.Throws<ArgumentException>(() => processor.Preprocess([square, wide]));
        Assert.Contains("Image 1", error.Message);
    }

    [Fact]
    public void QwenConfigFileLoadsAsShortestEdgeThenSquareCrop()
    {
        var path = Path.GetFullPath(Path.Combine(ImagingTestData.RepoRoot, "..", "shared", "models", "configs", "qwen-clip-preprocessor_config.json"));
        var config = ImageProcessorConfig.FromFile(path);
        Assert.Equal(448, config.Size.Scalar);
        Assert.Equal((448, 448), config.CropOutputSize());
        Assert.Equal((448, 597), config.ResizeOutputSize(375, 500));
        Assert.Equal((597, 448), config.ResizeOutputSize(500, 375));
        Assert.Equal(ImageProcessorConfig.OpenAiClipMean, config.ImageMean);
        Assert.Equal(ImageProcessorConfig.OpenAiClipStd, config.ImageStd);
        Assert.True(config.DoCenterCrop && config.DoNormalize && config.DoResize && config.DoRescale);
        Assert.Equal(1.0 / 255, config.RescaleFactor);
    }

    [Fact]
    public void SizeJsonFormsAreUnderstood()
    {
        var dir = Path.Combine(Path.GetTempPath(), "visualchat-preproc-" + Guid.NewGuid());
        Directory.CreateDirectory(dir);
        try
        {
            var dict = Path.Combine(dir, "a.json");
            File.WriteAllText(dict, """{"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}, "resample": 3}""");
            var a = ImageProcessorConfig.FromFile(dict);
            Assert.Equal((336, 448), a.ResizeOutputSize(600, 800));
            Assert.Equal((336, 336), a.OutputSize(600, 800));

            var fixedSize = Path.Combine(dir, "b.json");
            File.WriteAllText(fixedSize, """{"size": {"height": 448, "width": 448}, "do_center_crop": false}""");
            Assert.Equal((448, 448), ImageProcessorConfig.FromFile(fixedSize).OutputSize(600, 800));

            var bicubicOnly = Path.Combine(dir, "c.json");
            File.WriteAllText(bicubicOnly, """{"resample": 2}""");
            var error = Assert.Throws<NotSupportedException>(() => ImageProcessorConfig.FromFile(bicubicOnly));
            Assert.Contains("c.json", error.Message);

            var missing = Path.Combine(dir, "missing.json");
            Assert.Contains("missing.json", Assert.Throws<FileNotFoundException>(() => ImageProcessorConfig.FromFile(missing)).Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void PresetsMatchTheirModels()
    {
        Assert.Equal((224, 224), ImageProcessorConfig.Clip224.OutputSize(480, 640));
        Assert.Equal((224, 298), ImageProcessorConfig.Clip224.ResizeOutputSize(375, 500));
        Assert.Equal((336, 336), ImageProcessorConfig.Clip336.OutputSize(480, 640));
        Assert.Equal((336, 448), ImageProcessorConfig.Clip336.ResizeOutputSize(480, 640));
        Assert.Equal((448, 448), ImageProcessorConfig.QwenVL448.OutputSize(480, 640));
    }

    [Fact]
    public void CenterCropUsesFloorOffsetsAndPadsSmallImages()
    {
        var image = new RgbImage(5, 1, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
        var cropped = ClipImageProcessor.CenterCrop(image, 1, 2);
        Assert.Equal(new byte[] { 1, 1, 1, 2, 2, 2 }, cropped.Rgb); // left = (5 - 2) // 2 = 1

        // 2x1 into 4x3: numpy path pads with ceil((new - old) / 2) zeros before and crops back.
        var small = new RgbImage(2, 1, [9, 9, 9, 8, 8, 8]);
        var padded = ClipImageProcessor.CenterCrop(small, 3, 4);
        Assert.Equal((4, 3), (padded.Width, padded.Height));
        Assert.Equal(((byte)9, (byte)9, (byte)9), padded[1, 1]);
        Assert.Equal(((byte)8, (byte)8, (byte)8), padded[2, 1]);
        Assert.Equal(((byte)0, (byte)0, (byte)0), padded[0, 1]);
        Assert.Equal(((byte)0, (byte)0, (byte)0), padded[1, 0]);
    }

    [Fact]
    public void TorchAntialiasBackendIsCloseToPil()
    {
        // Measured over all eval images: at most 0.15 (about 10 levels) from PIL after normalisation.
        var relative = "eval/eval_data/images/cats/cat.png";
        var image = ImagingTestData.LoadEvalImage(relative);
        using var scope = NewDisposeScope();
        var pil = new ClipImageProcessor(ImageProcessorConfig.Clip224).Preprocess(image);
        var torchPath = new ClipImageProcessor(ImageProcessorConfig.Clip224, ResizeBackend.TorchAntialias).Preprocess(image);
        Assert.Equal(pil.shape, torchPath.shape);
        var maxDiff = (pil - torchPath).abs().max().item<float>();
        Assert.InRange(maxDiff, 0f, 0.2f);
        var expected = ImagingTestData.PilReference[relative].Clip224.ChannelMean;
        var means = torchPath.to_type(ScalarType.Float64).mean([1, 2]).data<double>().ToArray();
        for (int c = 0; c < 3; c++) Assert.InRange(means[c], expected[c] - 0.005, expected[c] + 0.005);
    }

    [Fact]
    public void PilResamplerUpscalesAndKeepsConstantImagesConstant()
    {
        var constant = new RgbImage(7, 5, Enumerable.Repeat((byte)77, 7 * 5 * 3).ToArray());
        foreach (var (w, h) in new[] { (3, 2), (20, 11), (7, 9) })
        {
            var resized = PilBicubicResampler.Resize(constant, w, h);
            Assert.Equal((w, h), (resized.Width, resized.Height));
            Assert.All(resized.Rgb, v => Assert.Equal(77, v));
        }
    }
}
