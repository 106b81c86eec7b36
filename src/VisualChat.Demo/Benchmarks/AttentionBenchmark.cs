using System.Diagnostics;
using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks;

public sealed record AttentionBenchmarkRow(string Kernel, long SequenceLength, int Images, double ForwardBackwardMs, double PeakExtraMiB, double RatioToCausal);

/// <summary>
/// Forward + backward time and peak extra memory of one attention layer's core (after projections) for plain causal
/// SDPA, efficient MMCA and the dense MMCA reference, on a sequence with several images spread through the text.
/// </summary>
public static class AttentionBenchmark
{
    public static IEnumerable<AttentionBenchmarkRow> Run(IEnumerable<long> lengths, int images = 4, int imageTokens = 256,
        int heads = 16, int headDim = 64, int repeats = 3, bool includeDense = true)
    {
        foreach (var length in lengths)
        {
            // At least half of each sequence stays text, so short sequences carry fewer images.
            int fitting = (int)Math.Min(images, length / 2 / imageTokens);
            var modality = Layout(length, fitting, imageTokens);
            double causal = 0;
            foreach (var kernel in includeDense ? new[] { "causal", "mmca", "dense-mmca" } : new[] { "causal", "mmca" })
            {
                var (ms, peak) = Measure(kernel, modality, heads, headDim, repeats);
                if (kernel == "causal") causal = ms;
                yield return new AttentionBenchmarkRow(kernel, length, fitting, ms, peak / (1024.0 * 1024.0), ms / causal);
            }
        }
    }

    /// <summary>Text, then the images spread evenly through the sequence with text between them.</summary>
    public static Tensor Layout(long length, int images, int imageTokens)
    {
        long textTokens = length - (long)images * imageTokens;
        if (textTokens < images + 1)
            throw new ArgumentException($"A sequence of {length} cannot hold {images} images of {imageTokens} tokens and text between them.");
        var modality = new long[length];
        long gap = textTokens / (images + 1), position = 0;
        for (int i = 0; i < images; i++)
        {
            for (long t = 0; t < gap; t++) modality[position++] = (long)TokenModality.Text;
            for (long t = 0; t < imageTokens; t++) modality[position++] = (long)TokenModality.Image;
        }
        while (position < length) modality[position++] = (long)TokenModality.Text;
        return tensor(modality).unsqueeze(0);
    }

    static (double Ms, long PeakBytes) Measure(string kernel, Tensor modality, int heads, int headDim, int repeats)
    {
        long length = modality.shape[1];
        double best = double.MaxValue;
        long peak = 0;
        for (int r = 0; r <= repeats; r++)
        {
            using var scope = NewDisposeScope();
            var q = randn(1, heads, length, headDim, requires_grad: true);
            var k = randn(1, heads, length, headDim, requires_grad: true);
            var v = randn(1, heads, length, headDim, requires_grad: true);
            var upstream = randn(1, heads, length, headDim);
            long before = PeakMemory.Reset();
            var sw = Stopwatch.StartNew();
            Tensor output;
            if (kernel == "causal")
            {
                output = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
            }
            else if (kernel == "mmca")
            {
                using var plan = new MmcaPlan(modality, length);
                output = MultiModalCausalAttention.Attend(q, k, v, plan);
            }
            else
            {
                output = DenseMultiModalCausalAttention.Attend(q, k, v, modality);
            }

            (output * upstream).sum().backward();
            double ms = sw.Elapsed.TotalMilliseconds;
            long extra = PeakMemory.HighWaterMark() - before;
            if (r == 0) continue; // warm-up
            best = Math.Min(best, ms);
            peak = Math.Max(peak, extra);
        }
        return (best, peak);
    }
}
