using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks;

/// <summary>
/// The machine's own ceilings, measured in the same run as a benchmark so ratios stay honest:
/// streaming-read bandwidth (the bound for decoding) and dense fp32 GEMM throughput (the bound for training).
/// </summary>
public static class Roofline
{
    /// <summary>Bytes per second the decode threads stream out of memory (a read-only pass over 1 GiB, far beyond the
    /// last-level cache): the bound of decoding, which reads every weight once per step.</summary>
    public static double StreamingReadBandwidth(long bytes = 1L << 30) => Kernels.StreamingRead.Bandwidth(bytes);

    /// <summary>A reusable reader of the streaming-read bandwidth (its 1 GiB buffer stays allocated): call it right next
    /// to each timed run, since a shared host's bandwidth moves between runs.</summary>
    public static Func<double> StreamingReadProbe(out IDisposable buffer)
    {
        var probe = new Kernels.StreamingRead();
        probe.Measure(1);
        buffer = probe;
        return () => probe.Measure();
    }

    /// <summary>Threads of the decode kernels (and of <see cref="StreamingReadBandwidth"/>).</summary>
    public static int DecodeThreads => Kernels.ThreadTeam.Shared.Size;

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
