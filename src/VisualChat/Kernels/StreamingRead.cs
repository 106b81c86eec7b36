using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace VisualChat.Kernels;

/// <summary>
/// The bandwidth bound of decoding: bytes per second that the decode threads can stream out of memory, measured by
/// summing a buffer far larger than the last-level cache with the same team and vector loads as the decode kernels. A
/// copy of a cache-sized buffer (what a copy benchmark measures) reads the cache, not memory, and overstates the bound.
/// The buffer is kept between readings so a benchmark can read the bandwidth right next to each timed run (on a shared
/// host it moves from minute to minute).
/// </summary>
internal sealed unsafe class StreamingRead : IDisposable
{
    readonly ThreadTeam team;
    readonly long floats;
    float* buffer;

    public StreamingRead(long bytes = 1L << 30, ThreadTeam? team = null)
    {
        this.team = team ?? ThreadTeam.Shared;
        floats = bytes / sizeof(float) / 64 * 64;
        buffer = (float*)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
        // Write every page first (fresh pages are zero) so readings measure reads, not page faults.
        for (long i = 0; i < floats; i += 1024) buffer[i] = 1;
    }

    /// <summary>Read-only bytes/s, best of <paramref name="passes"/> passes over the buffer.</summary>
    public double Measure(int passes = 3)
    {
        ObjectDisposedException.ThrowIf(buffer is null, this);
        var pass = new SumPass(buffer, floats, team.Size);
        double best = double.MaxValue;
        for (int r = 0; r < passes; r++) {
            var clock = Stopwatch.StartNew();
            team.Run(pass);
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        GC.KeepAlive(pass.Checksum);
        return floats * sizeof(float) / best;
    }

    /// <summary>One reading with a buffer of <paramref name="bytes"/> (allocated and freed here).</summary>
    public static double Bandwidth(long bytes = 1L << 30, int passes = 5)
    {
        using var probe = new StreamingRead(bytes);
        probe.Measure(1);
        return probe.Measure(passes);
    }

    public void Dispose()
    {
        NativeMemory.AlignedFree(buffer);
        buffer = null;
    }

    sealed class SumPass(float* buffer, long count, int members) : ITeamWork
    {
        readonly float[] sums = new float[members];

        public float Checksum => sums.Sum();

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int index, int memberCount)
        {
            long chunk = count / memberCount / 32 * 32;
            long start = chunk * index, end = index == memberCount - 1 ? count : start + chunk;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            long i = start;
            for (; i + 32 <= end; i += 32) {
                a0 = Avx.Add(a0, Avx.LoadVector256(buffer + i));
                a1 = Avx.Add(a1, Avx.LoadVector256(buffer + i + 8));
                a2 = Avx.Add(a2, Avx.LoadVector256(buffer + i + 16));
                a3 = Avx.Add(a3, Avx.LoadVector256(buffer + i + 24));
            }
            float s = Vector256.Sum(Avx.Add(Avx.Add(a0, a1), Avx.Add(a2, a3)));
            for (; i < end; i++) s += buffer[i];
            sums[index] = s;
        }
    }
}
