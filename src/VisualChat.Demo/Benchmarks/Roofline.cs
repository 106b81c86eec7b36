using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks;

/// <summary>
/// The machine's own ceilings, measured in the same run as a benchmark so ratios stay honest:
/// memory copy bandwidth (the bound for batch-1 decoding) and dense fp32 GEMM throughput (the bound for training).
/// </summary>
public static class Roofline
{
    /// <summary>Bytes per second of a large tensor copy (read + write counted), best of <paramref name="repeats"/>.</summary>
    public static double CopyBandwidth(long bytes = 512L << 20, int repeats = 5)
    {
        using var scope = NewDisposeScope();
        long n = bytes / sizeof(float);
        var src = ones(n, dtype: ScalarType.Float32);
        var dst = empty(n, dtype: ScalarType.Float32);
        dst.copy_(src);
        double best = double.MaxValue;
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            dst.copy_(src);
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * n * sizeof(float) / best;
    }

    /// <summary>FLOP/s of an n×n×n matmul in the given dtype, best of <paramref name="repeats"/>.</summary>
    public static double GemmThroughput(int n = 1024, ScalarType dtype = ScalarType.Float32, int repeats = 5)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var a = randn(n, n).to(dtype);
        var b = randn(n, n).to(dtype);
        a.matmul(b).Dispose();
        double best = double.MaxValue;
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            a.matmul(b).Dispose();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * n * n * (double)n / best;
    }
}
