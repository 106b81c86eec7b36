namespace VisualChat.Vision.Imaging;

/// <summary>
/// Port of Pillow's separable convolution resampling (libImaging/Resample.c, <c>ImagingResample</c>) with the
/// bicubic filter (a = -0.5) for 8-bit RGB, so that <c>Image.resize(size, Image.BICUBIC)</c> is reproduced
/// level for level: the filter support grows with the downscale factor (antialiasing), coefficients are
/// normalised then quantised to 22-bit fixed point, the horizontal pass runs first and both passes round and
/// clip to uint8.
/// </summary>
public static class PilBicubicResampler
{
    private const int PrecisionBits = 32 - 8 - 2;
    private const double BicubicSupport = 2.0;

    private static double BicubicFilter(double x)
    {
        const double a = -0.5;
        if (x < 0.0) x = -x;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }

    /// <summary>Per output index: first input index, tap count, and <c>kernelSize</c> fixed-point weights.</summary>
    private sealed record Coefficients(int KernelSize, int[] Bounds, int[] Weights);

    private static Coefficients Precompute(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = BicubicSupport * filterScale;
        int kernelSize = (int)Math.Ceiling(support) * 2 + 1;
        var bounds = new int[outSize * 2];
        var weights = new int[outSize * kernelSize];
        var k = new double[kernelSize];
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale;
            double ww = 0.0;
            double ss = 1.0 / filterScale;
            int xmin = (int)(center - support + 0.5);
            if (xmin < 0) xmin = 0;
            int xmax = (int)(center + support + 0.5);
            if (xmax > inSize) xmax = inSize;
            xmax -= xmin;
            for (int x = 0; x < xmax; x++)
            {
                double w = BicubicFilter((x + xmin - center + 0.5) * ss);
                k[x] = w;
                ww += w;
            }
            for (int x = 0; x < xmax; x++)
            {
                double normalized = ww != 0.0 ? k[x] / ww : k[x];
                weights[xx * kernelSize + x] = normalized < 0
                    ? (int)(-0.5 + normalized * (1 << PrecisionBits))
                    : (int)(0.5 + normalized * (1 << PrecisionBits));
            }
            bounds[xx * 2] = xmin;
            bounds[xx * 2 + 1] = xmax;
        }
        return new Coefficients(kernelSize, bounds, weights);
    }

    private static byte Clip8(int value)
    {
        int shifted = value >> PrecisionBits;
        return shifted < 0 ? (byte)0 : shifted > 255 ? (byte)255 : (byte)shifted;
    }

    public static RgbImage Resize(RgbImage image, int outWidth, int outHeight) =>
        new(outWidth, outHeight, Resize(image.Rgb, image.Width, image.Height, outWidth, outHeight));

    /// <summary>Resizes an interleaved RGB buffer; returns a new <paramref name="outWidth"/> x <paramref name="outHeight"/> buffer.</summary>
    public static byte[] Resize(byte[] rgb, int width, int height, int outWidth, int outHeight)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(outWidth, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outHeight, 1);
        if (rgb.Length != 3 * width * height)
            throw new ArgumentException($"RGB buffer has {rgb.Length} bytes, expected {3 * width * height} for {width}x{height}.", nameof(rgb));
        bool needHorizontal = outWidth != width;
        bool needVertical = outHeight != height;
        if (!needHorizontal && !needVertical) return (byte[])rgb.Clone();

        var vertical = Precompute(height, outHeight);
        var horizontal = Precompute(width, outWidth);
        var vBounds = vertical.Bounds;

        byte[] source = rgb;
        int sourceWidth = width;
        if (needHorizontal)
        {
            // Only the rows the vertical pass reads are resampled horizontally.
            int firstRow = vBounds[0];
            int lastRow = vBounds[outHeight * 2 - 2] + vBounds[outHeight * 2 - 1];
            vBounds = (int[])vBounds.Clone();
            for (int i = 0; i < outHeight; i++) vBounds[i * 2] -= firstRow;
            source = ResampleHorizontal(rgb, width, firstRow, lastRow - firstRow, outWidth, horizontal);
            sourceWidth = outWidth;
        }
        if (!needVertical) return source;
        return ResampleVertical(source, sourceWidth, outHeight, vertical.KernelSize, vBounds, vertical.Weights);
    }

    private static byte[] ResampleHorizontal(byte[] input, int inWidth, int rowOffset, int rows, int outWidth, Coefficients c)
    {
        var output = new byte[rows * outWidth * 3];
        var bounds = c.Bounds;
        var weights = c.Weights;
        int ksize = c.KernelSize;
        Parallel.For(0, rows, yy =>
        {
            int inRow = (yy + rowOffset) * inWidth * 3;
            int outRow = yy * outWidth * 3;
            for (int xx = 0; xx < outWidth; xx++)
            {
                int xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
                int kOffset = xx * ksize;
                int ss0 = 1 << (PrecisionBits - 1), ss1 = ss0, ss2 = ss0;
                int p = inRow + xmin * 3;
                for (int x = 0; x < xmax; x++, p += 3)
                {
                    int w = weights[kOffset + x];
                    ss0 += input[p] * w;
                    ss1 += input[p + 1] * w;
                    ss2 += input[p + 2] * w;
                }
                int o = outRow + xx * 3;
                output[o] = Clip8(ss0);
                output[o + 1] = Clip8(ss1);
                output[o + 2] = Clip8(ss2);
            }
        });
        return output;
    }

    private static byte[] ResampleVertical(byte[] input, int width, int outHeight, int ksize, int[] bounds, int[] weights)
    {
        var output = new byte[outHeight * width * 3];
        int stride = width * 3;
        // Accumulate whole rows tap by tap: sequential memory access, same integer sums as PIL's per-pixel loop.
        Parallel.For(0, outHeight, () => new int[stride], (yy, _, accumulator) =>
        {
            int ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1];
            int kOffset = yy * ksize;
            Array.Fill(accumulator, 1 << (PrecisionBits - 1));
            for (int y = 0; y < ymax; y++)
            {
                int w = weights[kOffset + y];
                var row = input.AsSpan((ymin + y) * stride, stride);
                for (int i = 0; i < stride; i++) accumulator[i] += row[i] * w;
            }
            var outRow = output.AsSpan(yy * stride, stride);
            for (int i = 0; i < stride; i++) outRow[i] = Clip8(accumulator[i]);
            return accumulator;
        }, _ => { });
        return output;
    }
}
