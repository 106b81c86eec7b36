using System.Runtime.CompilerServices;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace VisualChat.Kernels;

/// <summary>
/// The bandwidth bound of decoding: bytes per second that the decode threads can stream out of memory, measured by
/// summing a buffer far larger than the last-level cache with the same team and vector loads as the decode kernels. A
/// copy of a cache-sized buffer (what a copy benchmark measures) reads the cache, not memory, and overstates the bound.
/// </summary>
internal static unsafe class StreamingRead
{
    /// <summary>Read-only bytes/s over a <paramref name="bytes"/> buffer, best of <paramref name="repeats"/> passes.</summary>
    public static double Bandwidth(long bytes = 1L << 30, int repeats = 5, ThreadTeam? team = null)
    {
        team ??= ThreadTeam.Shared;
        long floats = bytes / sizeof(float) / 64 * 64;
        float* buffer = (float*)NativeMemory.AlignedAlloc((nuint)(floats * sizeof(float)), 64);
        try {
            // Write every page first (fresh pages are zero) so the passes measure reads, not page faults.
            for (long i = 0; i < floats; i += 1024) buffer[i] = 1;
            var pass = new SumPass(buffer, floats, team.Size);
            double best = double.MaxValue;
            for (int r = 0; r < repeats + 1; r++) {
                var clock = Stopwatch.StartNew();
                team.Run(pass);
                if (r > 0) best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            GC.KeepAlive(pass.Checksum);
            return floats * sizeof(float) / best;
        } finally {
            NativeMemory.AlignedFree(buffer);
        }
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
