using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Vision.Imaging;

/// <summary>How <see cref="ClipImageProcessor"/> resizes.</summary>
public enum ResizeBackend
{
    /// <summary>Exact port of PIL's bicubic resampling on uint8 (what HF CLIPImageProcessor runs).</summary>
    PilExact,
    /// <summary>libtorch <c>interpolate(bicubic, antialias: true)</c> in float, rounded back to uint8 levels; close to PIL, not equal.</summary>
    TorchAntialias,
}

/// <summary>
/// HF <c>CLIPImageProcessor</c>: bicubic resize (shortest edge or fixed size), center crop, rescale by
/// rescale_factor and normalise with image_mean/image_std, giving float32 [3, H, W] in RGB order.
/// Float arithmetic follows the numpy path (rescale in float64 then cast to float32, normalise in float32).
/// </summary>
public sealed class ClipImageProcessor
{
    public ImageProcessorConfig Config { get; }
    public ResizeBackend Backend { get; }

    // Per channel, the final float value of each 0..255 level: exact and cheaper than per-pixel arithmetic.
    private readonly float[][] _levelToValue;

    public ClipImageProcessor(ImageProcessorConfig config, ResizeBackend backend = ResizeBackend.PilExact)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        Backend = backend;
        _levelToValue = new float[3][];
        for (int c = 0; c < 3; c++)
        {
            var table = new float[256];
            for (int v = 0; v < 256; v++)
            {
                float x = config.DoRescale ? (float)(v * config.RescaleFactor) : v;
                if (config.DoNormalize) x = (x - config.ImageMean[c]) / config.ImageStd[c];
                table[v] = x;
            }
            _levelToValue[c] = table;
        }
    }

    /// <summary>Height and width of the output for this image.</summary>
    public (int Height, int Width) OutputSize(RgbImage image) => Config.OutputSize(image.Height, image.Width);

    /// <summary>Preprocesses one image into float32 [3, H, W].</summary>
    public Tensor Preprocess(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var (h, w) = OutputSize(image);
        var buffer = new float[3 * h * w];
        PreprocessInto(image, buffer);
        return tensor(buffer, new long[] { 3, h, w }, ScalarType.Float32);
    }

    /// <summary>Preprocesses a batch into float32 [N, 3, H, W], images in parallel. All outputs must share one size (true whenever center crop or a fixed size is configured).</summary>
    public Tensor Preprocess(IReadOnlyList<RgbImage> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0)
            throw new ArgumentException("Cannot preprocess an empty batch of images.", nameof(images));
        var (h, w) = OutputSize(images[0]);
        for (int i = 1; i < images.Count; i++)
        {
            var size = OutputSize(images[i]);
            if (size != (h, w))
            {
                throw new ArgumentException(
                    $"Image {i} ({images[i].Width}x{images[i].Height}) preprocesses to {size.Height}x{size.Width}, but image 0 gives {h}x{w}; " +
                    "batching needs equal sizes (enable do_center_crop or a fixed height/width).", nameof(images));
            }
        }
        int plane = 3 * h * w;
        var buffer = new float[(long)images.Count * plane];
        if (Backend == ResizeBackend.TorchAntialias)
        {
            // libtorch already parallelises one interpolate across its threads.
            for (int i = 0; i < images.Count; i++) PreprocessInto(images[i], buffer.AsSpan(i * plane, plane));
        }
        else
        {
            Parallel.For(0, images.Count, i => PreprocessInto(images[i], buffer.AsSpan(i * plane, plane)));
        }
        return tensor(buffer, new long[] { images.Count, 3, h, w }, ScalarType.Float32);
    }

    /// <summary>The uint8 image after resize and center crop, before rescale/normalise.</summary>
    public RgbImage ResizeAndCrop(RgbImage image)
    {
        var resized = image;
        if (Config.DoResize)
        {
            var (rh, rw) = Config.ResizeOutputSize(image.Height, image.Width);
            resized = Backend == ResizeBackend.PilExact
                ? PilBicubicResampler.Resize(image, rw, rh)
                : TorchResize(image, rw, rh);
        }
        if (!Config.DoCenterCrop) return resized;
        var (ch, cw) = Config.CropOutputSize();
        return CenterCrop(resized, ch, cw);
    }

    private void PreprocessInto(RgbImage image, Span<float> destination)
    {
        var prepared = ResizeAndCrop(image);
        int pixels = prepared.Width * prepared.Height;
        var rgb = prepared.Rgb;
        for (int c = 0; c < 3; c++)
        {
            var table = _levelToValue[c];
            var plane = destination.Slice(c * pixels, pixels);
            for (int p = 0; p < pixels; p++) plane[p] = table[rgb[p * 3 + c]];
        }
    }

    /// <summary>
    /// transformers' image_transforms.center_crop: top = (h - crop_h) // 2 (floor), left likewise; an image smaller
    /// than the crop is zero-padded, centered with ceil((new - old) / 2) before cropping.
    /// </summary>
    public static RgbImage CenterCrop(RgbImage image, int cropHeight, int cropWidth)
    {
        int h = image.Height, w = image.Width;
        if (h == cropHeight && w == cropWidth) return image;
        int top = FloorDiv2(h - cropHeight), left = FloorDiv2(w - cropWidth);
        int newH = Math.Max(cropHeight, h), newW = Math.Max(cropWidth, w);
        int padTop = (newH - h + 1) / 2, padLeft = (newW - w + 1) / 2;
        // Position of the crop inside the (possibly) padded canvas; the source image sits at (padTop, padLeft).
        int cropTop = top + padTop, cropLeft = left + padLeft;
        var output = new byte[cropHeight * cropWidth * 3];
        for (int y = 0; y < cropHeight; y++)
        {
            int sy = cropTop + y - padTop;
            if (sy < 0 || sy >= h) continue;
            for (int x = 0; x < cropWidth; x++)
            {
                int sx = cropLeft + x - padLeft;
                if (sx < 0 || sx >= w) continue;
                int s = (sy * w + sx) * 3, d = (y * cropWidth + x) * 3;
                output[d] = image.Rgb[s];
                output[d + 1] = image.Rgb[s + 1];
                output[d + 2] = image.Rgb[s + 2];
            }
        }
        return new RgbImage(cropWidth, cropHeight, output);
    }

    private static int FloorDiv2(int value) => (int)Math.Floor(value / 2.0);

    private static readonly Scalar PixelMin = 0.ToScalar(), PixelMax = 255.ToScalar();   // held: see TorchScalars

    private static RgbImage TorchResize(RgbImage image, int outWidth, int outHeight)
    {
        using var scope = NewDisposeScope();
        var input = image.ToTensor(ScalarType.Float32).unsqueeze(0);
        var resized = nn.functional.interpolate(input, new long[] { outHeight, outWidth },
            mode: InterpolationMode.Bicubic, align_corners: false, antialias: true);
        var levels = resized.squeeze(0).round().clamp(PixelMin, PixelMax).to_type(ScalarType.Byte).permute(1, 2, 0).contiguous();
        return new RgbImage(outWidth, outHeight, levels.data<byte>().ToArray());
    }
}
