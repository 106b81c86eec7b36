using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace VisualChat.Kernels;

/// <summary>
/// y[b] = W·x[b] (+ bias) for a band of W's rows and a small batch of vectors: the decode-time matrix-vector product.
/// Decoding is bound by reading the weights, so each weight row is loaded once for every vector of the batch (a batch of
/// 8 costs little more than 1), and a q8 row reads a quarter of the bytes of fp32.
/// </summary>
/// <remarks>Needs AVX2 and FMA (<see cref="IsSupported"/>); callers keep the libtorch path for other CPUs. The q8 dot
/// product uses AVX-VNNI's <c>vpdpbusd</c> where present and AVX2's <c>vpmaddubsw</c>/<c>vpmaddwd</c> otherwise (the
/// same integer sums).</remarks>
internal static unsafe class MatVec
{
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Rows [<paramref name="rowStart"/>, <paramref name="rowEnd"/>) of y[b·yStride + r] = W[r]·x[b] (+ bias[r]),
    /// added to y when <paramref name="accumulate"/>. F32/BF16 read x[b·xStride …]; Q8 reads the quantized copy
    /// <paramref name="xq"/>[b·xStride …] and its block scales <paramref name="xScales"/>[b·xStride/32 …].</summary>
    public static void Multiply(in WeightMatrix w, int rowStart, int rowEnd, float* x, sbyte* xq, float* xScales, int xStride,
        int batch, float* y, int yStride, bool accumulate)
    {
        switch (w.Format) {
            case WeightFormat.F32:
                F32(w, rowStart, rowEnd, x, xStride, batch, y, yStride, accumulate);
                break;
            case WeightFormat.BF16:
                BF16(w, rowStart, rowEnd, x, xStride, batch, y, yStride, accumulate);
                break;
            case WeightFormat.Q8:
                BlockRows<Q8Blocks>(w, rowStart, rowEnd, xq, xScales, xStride, batch, y, yStride, accumulate);
                break;
            default:
                BlockRows<Q4Blocks>(w, rowStart, rowEnd, xq, xScales, xStride, batch, y, yStride, accumulate);
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store(in WeightMatrix w, int row, float value, float* y, bool accumulate)
    {
        if (w.Bias != null) value += w.Bias[row];
        *y = accumulate ? *y + value : value;
    }

    /// <summary>Reads 8 (or 16) consecutive weights as fp32 (F32: a load; BF16: widen and shift).</summary>
    interface IWeights
    {
        static abstract Vector256<float> Load(void* row, int k);
        /// <summary>16 weights; needs AVX-512.</summary>
        static abstract Vector512<float> Load512(void* row, int k);
        static abstract float Scalar(void* row, int k);
        static abstract int ElementSize { get; }
    }

    struct F32Weights : IWeights
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(void* row, int k) => Avx.LoadVector256((float*)row + k);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load512(void* row, int k) => Vector512.Load((float*)row + k);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Scalar(void* row, int k) => ((float*)row)[k];
        public static int ElementSize => 4;
    }

    struct BF16Weights : IWeights
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(void* row, int k) => LoadBF16((ushort*)row + k);
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load512(void* row, int k) =>
            Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256((ushort*)row + k)), 16).AsSingle();
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Scalar(void* row, int k) => BF16ToFloat(((ushort*)row)[k]);
        public static int ElementSize => 2;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> LoadBF16(ushort* p) =>
        Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Sse2.LoadVector128(p)), 16).AsSingle();

    static void F32(in WeightMatrix w, int rowStart, int rowEnd, float* x, int xStride, int batch, float* y, int yStride, bool accumulate)
    {
        if (Vector512.IsHardwareAccelerated && w.Cols % 16 == 0) {
            if (batch == 1) F32Wide(w, rowStart, rowEnd, x, y, accumulate);
            else WideBatch<F32Weights>(w, rowStart, rowEnd, x, xStride, batch, y, yStride, accumulate);
        } else {
            Float<F32Weights>(w, rowStart, rowEnd, x, xStride, batch, y, yStride, accumulate);
        }
    }

    static void BF16(in WeightMatrix w, int rowStart, int rowEnd, float* x, int xStride, int batch, float* y, int yStride, bool accumulate)
    {
        if (batch == 1 && Avx512F.IsSupported && w.Cols % 16 == 0) BF16Wide(w, rowStart, rowEnd, x, y, accumulate);
        else if (Avx512F.IsSupported && w.Cols % 16 == 0) WideBatch<BF16Weights>(w, rowStart, rowEnd, x, xStride, batch, y, yStride, accumulate);
        else Float<BF16Weights>(w, rowStart, rowEnd, x, xStride, batch, y, yStride, accumulate);
    }

    /// <summary>Batch 1, bf16 widened 16 at a time into 512-bit fp32 vectors, one row (one stream) at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void BF16Wide(in WeightMatrix w, int rowStart, int rowEnd, float* x, float* y, bool accumulate)
    {
        int n = w.Cols, unrolled = n & ~31;
        ushort* data = (ushort*)w.Data;
        for (int r = rowStart; r < rowEnd; r++) {
            ushort* row = data + (long)r * n;
            Vector512<float> a0 = default, a1 = default;
            int k = 0;
            for (; k < unrolled; k += 32) {
                var w0 = Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256(row + k)), 16).AsSingle();
                var w1 = Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256(row + k + 16)), 16).AsSingle();
                a0 = Vector512.FusedMultiplyAdd(w0, Vector512.Load(x + k), a0);
                a1 = Vector512.FusedMultiplyAdd(w1, Vector512.Load(x + k + 16), a1);
            }
            for (; k < n; k += 16)
                a0 = Vector512.FusedMultiplyAdd(Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256(row + k)), 16).AsSingle(), Vector512.Load(x + k), a0);
            Store(w, r, Sum(a0 + a1), y + r, accumulate);
        }
    }

    /// <summary>Batch 1 with 64-byte loads, one row at a time with four accumulators: the matrix is read as one
    /// sequential stream (what the hardware prefetcher follows best) while x stays in L1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void F32Wide(in WeightMatrix w, int rowStart, int rowEnd, float* x, float* y, bool accumulate)
    {
        int n = w.Cols, unrolled = n & ~63;
        float* data = (float*)w.Data;
        for (int r = rowStart; r < rowEnd; r++) {
            float* row = data + (long)r * n;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            int k = 0;
            for (; k < unrolled; k += 64) {
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(row + k), Vector512.Load(x + k), a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Load(row + k + 16), Vector512.Load(x + k + 16), a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.Load(row + k + 32), Vector512.Load(x + k + 32), a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.Load(row + k + 48), Vector512.Load(x + k + 48), a3);
            }
            for (; k < n; k += 16) a0 = Vector512.FusedMultiplyAdd(Vector512.Load(row + k), Vector512.Load(x + k), a0);
            Store(w, r, Sum((a0 + a1) + (a2 + a3)), y + r, accumulate);
        }
    }

    /// <summary>Rows ahead of the current tile whose weights a batch kernel prefetches into L2: far enough to cover the
    /// memory latency while a tile's arithmetic runs, near enough to still be in L2 when the tile reaches them.</summary>
    const int PrefetchRows = 8;

    /// <summary>Into L2: the line at <paramref name="at"/> in each of four rows <paramref name="rowBytes"/> apart (called
    /// once per 16 columns: one line per row for fp32, each bf16 line twice).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PrefetchGroup(byte* at, long rowBytes)
    {
        Sse.Prefetch1(at);
        Sse.Prefetch1(at + rowBytes);
        Sse.Prefetch1(at + 2 * rowBytes);
        Sse.Prefetch1(at + 3 * rowBytes);
    }

    /// <summary>Batches with 512-bit vectors, fp32 or bf16 weights (widened in registers): tiles of 4 rows × 4 vectors
    /// (16 accumulators, 8 loads per 16 FMAs); a row
    /// group's later passes over the batch read it from L1. With a batch the product does several FMAs per weight byte,
    /// so the hardware prefetcher, which paces itself on the demand stream, falls behind: the first pass over a group
    /// prefetches the group <see cref="PrefetchRows"/> rows ahead into L2 (one line per row per 16 columns), which
    /// lifted batch 8 and 16 by ≈ 1.4–1.5× on a matrix streamed from memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void WideBatch<T>(in WeightMatrix w, int rowStart, int rowEnd, float* x, int xStride, int batch, float* y, int yStride, bool accumulate)
        where T : struct, IWeights
    {
        int n = w.Cols;
        long rowBytes = (long)n * T.ElementSize;
        byte* data = (byte*)w.Data;
        int r = rowStart;
        for (; r + 4 <= rowEnd; r += 4) {
            byte* w0 = data + r * rowBytes, w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
            byte* ahead = r + 4 + PrefetchRows <= rowEnd ? w0 + PrefetchRows * rowBytes : null;
            int b = 0;
            for (; b + 4 <= batch; b += 4) {
                float* x0 = x + (long)b * xStride, x1 = x0 + xStride, x2 = x1 + xStride, x3 = x2 + xStride;
                byte* prefetch = b == 0 ? ahead : null;
                Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default;
                Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default, a30 = default, a31 = default, a32 = default, a33 = default;
                for (int k = 0; k < n; k += 16) {
                    if (prefetch != null) PrefetchGroup(prefetch + (long)k * T.ElementSize, rowBytes);
                    var v0 = Vector512.Load(x0 + k);
                    var v1 = Vector512.Load(x1 + k);
                    var v2 = Vector512.Load(x2 + k);
                    var v3 = Vector512.Load(x3 + k);
                    var p = T.Load512(w0, k);
                    a00 = Vector512.FusedMultiplyAdd(p, v0, a00); a01 = Vector512.FusedMultiplyAdd(p, v1, a01);
                    a02 = Vector512.FusedMultiplyAdd(p, v2, a02); a03 = Vector512.FusedMultiplyAdd(p, v3, a03);
                    p = T.Load512(w1, k);
                    a10 = Vector512.FusedMultiplyAdd(p, v0, a10); a11 = Vector512.FusedMultiplyAdd(p, v1, a11);
                    a12 = Vector512.FusedMultiplyAdd(p, v2, a12); a13 = Vector512.FusedMultiplyAdd(p, v3, a13);
                    p = T.Load512(w2, k);
                    a20 = Vector512.FusedMultiplyAdd(p, v0, a20); a21 = Vector512.FusedMultiplyAdd(p, v1, a21);
                    a22 = Vector512.FusedMultiplyAdd(p, v2, a22); a23 = Vector512.FusedMultiplyAdd(p, v3, a23);
                    p = T.Load512(w3, k);
                    a30 = Vector512.FusedMultiplyAdd(p, v0, a30); a31 = Vector512.FusedMultiplyAdd(p, v1, a31);
                    a32 = Vector512.FusedMultiplyAdd(p, v2, a32); a33 = Vector512.FusedMultiplyAdd(p, v3, a33);
                }
                float* y0 = y + (long)b * yStride, y1 = y0 + yStride, y2 = y1 + yStride, y3 = y2 + yStride;
                Store(w, r, Sum(a00), y0 + r, accumulate); Store(w, r, Sum(a01), y1 + r, accumulate);
                Store(w, r, Sum(a02), y2 + r, accumulate); Store(w, r, Sum(a03), y3 + r, accumulate);
                Store(w, r + 1, Sum(a10), y0 + r + 1, accumulate); Store(w, r + 1, Sum(a11), y1 + r + 1, accumulate);
                Store(w, r + 1, Sum(a12), y2 + r + 1, accumulate); Store(w, r + 1, Sum(a13), y3 + r + 1, accumulate);
                Store(w, r + 2, Sum(a20), y0 + r + 2, accumulate); Store(w, r + 2, Sum(a21), y1 + r + 2, accumulate);
                Store(w, r + 2, Sum(a22), y2 + r + 2, accumulate); Store(w, r + 2, Sum(a23), y3 + r + 2, accumulate);
                Store(w, r + 3, Sum(a30), y0 + r + 3, accumulate); Store(w, r + 3, Sum(a31), y1 + r + 3, accumulate);
                Store(w, r + 3, Sum(a32), y2 + r + 3, accumulate); Store(w, r + 3, Sum(a33), y3 + r + 3, accumulate);
            }
            for (; b < batch; b++) {
                // The batch's last (batch mod 4) vectors: the group's four rows against one vector, four chains. A batch
                // of 2 or 3 has no 4-wide pass, so its first vector prefetches.
                float* xb = x + (long)b * xStride, yb = y + (long)b * yStride;
                byte* prefetch = b == 0 ? ahead : null;
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (int k = 0; k < n; k += 16) {
                    if (prefetch != null) PrefetchGroup(prefetch + (long)k * T.ElementSize, rowBytes);
                    var xv = Vector512.Load(xb + k);
                    a0 = Vector512.FusedMultiplyAdd(T.Load512(w0, k), xv, a0);
                    a1 = Vector512.FusedMultiplyAdd(T.Load512(w1, k), xv, a1);
                    a2 = Vector512.FusedMultiplyAdd(T.Load512(w2, k), xv, a2);
                    a3 = Vector512.FusedMultiplyAdd(T.Load512(w3, k), xv, a3);
                }
                Store(w, r, Sum(a0), yb + r, accumulate);
                Store(w, r + 1, Sum(a1), yb + r + 1, accumulate);
                Store(w, r + 2, Sum(a2), yb + r + 2, accumulate);
                Store(w, r + 3, Sum(a3), yb + r + 3, accumulate);
            }
        }
        for (; r < rowEnd; r++) {
            byte* row = data + r * rowBytes;
            for (int b = 0; b < batch; b++) {
                float* xb = x + (long)b * xStride;
                Vector512<float> a = default;
                for (int k = 0; k < n; k += 16) a = Vector512.FusedMultiplyAdd(T.Load512(row, k), Vector512.Load(xb + k), a);
                Store(w, r, Sum(a), y + (long)b * yStride + r, accumulate);
            }
        }
    }

    /// <summary>Tiles of 4 rows × 2 vectors (8 accumulators, 6 loads per 8 FMAs): with a batch the product is bound by
    /// arithmetic, not by the weights, so each loaded weight vector serves two sequences and each x vector four rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Float<T>(in WeightMatrix w, int rowStart, int rowEnd, float* x, int xStride, int batch, float* y, int yStride, bool accumulate)
        where T : struct, IWeights
    {
        int n = w.Cols, vecEnd = n & ~7;
        byte* data = (byte*)w.Data;
        long rowBytes = (long)n * T.ElementSize;
        int r = rowStart;
        for (; r + 4 <= rowEnd; r += 4) {
            byte* w0 = data + r * rowBytes, w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
            int b = 0;
            for (; b + 2 <= batch; b += 2) {
                float* x0 = x + (long)b * xStride, x1 = x0 + xStride;
                Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
                int k = 0;
                for (; k < vecEnd; k += 8) {
                    var xv0 = Avx.LoadVector256(x0 + k);
                    var xv1 = Avx.LoadVector256(x1 + k);
                    var wv = T.Load(w0, k);
                    a00 = Fma.MultiplyAdd(wv, xv0, a00);
                    a01 = Fma.MultiplyAdd(wv, xv1, a01);
                    wv = T.Load(w1, k);
                    a10 = Fma.MultiplyAdd(wv, xv0, a10);
                    a11 = Fma.MultiplyAdd(wv, xv1, a11);
                    wv = T.Load(w2, k);
                    a20 = Fma.MultiplyAdd(wv, xv0, a20);
                    a21 = Fma.MultiplyAdd(wv, xv1, a21);
                    wv = T.Load(w3, k);
                    a30 = Fma.MultiplyAdd(wv, xv0, a30);
                    a31 = Fma.MultiplyAdd(wv, xv1, a31);
                }
                float s00 = Vector256.Sum(a00), s01 = Vector256.Sum(a01), s10 = Vector256.Sum(a10), s11 = Vector256.Sum(a11);
                float s20 = Vector256.Sum(a20), s21 = Vector256.Sum(a21), s30 = Vector256.Sum(a30), s31 = Vector256.Sum(a31);
                for (; k < n; k++) {
                    float v0 = T.Scalar(w0, k), v1 = T.Scalar(w1, k), v2 = T.Scalar(w2, k), v3 = T.Scalar(w3, k);
                    s00 += v0 * x0[k]; s01 += v0 * x1[k]; s10 += v1 * x0[k]; s11 += v1 * x1[k];
                    s20 += v2 * x0[k]; s21 += v2 * x1[k]; s30 += v3 * x0[k]; s31 += v3 * x1[k];
                }
                float* y0 = y + (long)b * yStride, y1 = y0 + yStride;
                Store(w, r, s00, y0 + r, accumulate); Store(w, r, s01, y1 + r, accumulate);
                Store(w, r + 1, s10, y0 + r + 1, accumulate); Store(w, r + 1, s11, y1 + r + 1, accumulate);
                Store(w, r + 2, s20, y0 + r + 2, accumulate); Store(w, r + 2, s21, y1 + r + 2, accumulate);
                Store(w, r + 3, s30, y0 + r + 3, accumulate); Store(w, r + 3, s31, y1 + r + 3, accumulate);
            }
            if (b < batch) {
                // The odd vector: four rows against it, four independent chains.
                float* xb = x + (long)b * xStride;
                Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                int k = 0;
                for (; k < vecEnd; k += 8) {
                    var xv = Avx.LoadVector256(xb + k);
                    a0 = Fma.MultiplyAdd(T.Load(w0, k), xv, a0);
                    a1 = Fma.MultiplyAdd(T.Load(w1, k), xv, a1);
                    a2 = Fma.MultiplyAdd(T.Load(w2, k), xv, a2);
                    a3 = Fma.MultiplyAdd(T.Load(w3, k), xv, a3);
                }
                float s0 = Vector256.Sum(a0), s1 = Vector256.Sum(a1), s2 = Vector256.Sum(a2), s3 = Vector256.Sum(a3);
                for (; k < n; k++) {
                    s0 += T.Scalar(w0, k) * xb[k]; s1 += T.Scalar(w1, k) * xb[k]; s2 += T.Scalar(w2, k) * xb[k]; s3 += T.Scalar(w3, k) * xb[k];
                }
                float* yb = y + (long)b * yStride;
                Store(w, r, s0, yb + r, accumulate);
                Store(w, r + 1, s1, yb + r + 1, accumulate);
                Store(w, r + 2, s2, yb + r + 2, accumulate);
                Store(w, r + 3, s3, yb + r + 3, accumulate);
            }
        }
        for (; r < rowEnd; r++) {
            byte* row = data + r * rowBytes;
            for (int b = 0; b < batch; b++) {
                float* xb = x + (long)b * xStride;
                Vector256<float> a = default;
                int k = 0;
                for (; k < vecEnd; k += 8) a = Fma.MultiplyAdd(T.Load(row, k), Avx.LoadVector256(xb + k), a);
                float s = Vector256.Sum(a);
                for (; k < n; k++) s += T.Scalar(row, k) * xb[k];
                Store(w, r, s, y + (long)b * yStride + r, accumulate);
            }
        }
    }

    /// <summary>The lanes' sum by halving (512 → 256 → 128 bits, then <see cref="Vector128.Sum"/>): .NET 10's
    /// <c>Vector512.Sum</c> costs about three times as much, which showed in kernels that reduce per row or position.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(Vector512<float> v)
    {
        var half = v.GetLower() + v.GetUpper();
        return Vector128.Sum(half.GetLower() + half.GetUpper());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float BF16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Sum over 32 lanes of w·x as eight int32 partial sums. <c>vpmaddubsw</c> multiplies unsigned by signed
    /// bytes, so |w| carries the magnitude and w's sign moves onto x; both are within ±127, so the int16 pair sums
    /// (≤ 2·127·127) never saturate.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<int> Dot32(Vector256<sbyte> w, Vector256<sbyte> x)
    {
        var magnitude = Avx2.Abs(w);
        var signedX = Avx2.Sign(x, w);
        if (AvxVnni.IsSupported) return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, magnitude, signedX);
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(magnitude, signedX), Vector256<short>.One);
    }

    /// <summary>How a quantized row's blocks of 32 weights are read as signed bytes (q8: loaded; q4: unpacked).</summary>
    interface IBlockWeights
    {
        static abstract Vector256<sbyte> Block(byte* row, int block);
        static abstract long RowBytes(int cols);
    }

    struct Q8Blocks : IBlockWeights
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<sbyte> Block(byte* row, int block) => Avx.LoadVector256((sbyte*)row + block * Q8.BlockSize);
        public static long RowBytes(int cols) => cols;
    }

    struct Q4Blocks : IBlockWeights
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<sbyte> Block(byte* row, int block) => Q4.Unpack(row + block * Q4.BlockBytes);
        public static long RowBytes(int cols) => cols / 2;
    }

    /// <summary>q8 or q4 weights against the q8 activations: per block, the integer dot product times both scales.
    /// Batch 1 reads one row at a time, two blocks per iteration, so the weights are one sequential stream (what the
    /// prefetcher follows best) while x and its scales stay in L1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void BlockRows<T>(in WeightMatrix w, int rowStart, int rowEnd, sbyte* xq, float* xScales, int xStride, int batch, float* y, int yStride, bool accumulate)
        where T : struct, IBlockWeights
    {
        int n = w.Cols, blocks = n / Q8.BlockSize, scaleStride = xStride / Q8.BlockSize;
        byte* data = (byte*)w.Data;
        long rowBytes = T.RowBytes(n);
        for (int r = rowStart; r < rowEnd; r++) {
            byte* row = data + r * rowBytes;
            float* rowScales = w.Scales + (long)r * blocks;
            if (batch == 1) {
                Vector256<float> a0 = default, a1 = default;
                int k = 0;
                for (; k + 2 <= blocks; k += 2) {
                    var d0 = Avx.ConvertToVector256Single(Dot32(T.Block(row, k), Avx.LoadVector256(xq + k * Q8.BlockSize)));
                    var d1 = Avx.ConvertToVector256Single(Dot32(T.Block(row, k + 1), Avx.LoadVector256(xq + (k + 1) * Q8.BlockSize)));
                    a0 = Fma.MultiplyAdd(d0, Vector256.Create(rowScales[k] * xScales[k]), a0);
                    a1 = Fma.MultiplyAdd(d1, Vector256.Create(rowScales[k + 1] * xScales[k + 1]), a1);
                }
                if (k < blocks) {
                    var d = Avx.ConvertToVector256Single(Dot32(T.Block(row, k), Avx.LoadVector256(xq + k * Q8.BlockSize)));
                    a0 = Fma.MultiplyAdd(d, Vector256.Create(rowScales[k] * xScales[k]), a0);
                }
                Store(w, r, Vector256.Sum(a0 + a1), y + r, accumulate);
                continue;
            }
            for (int b = 0; b < batch; b++) {
                sbyte* xb = xq + (long)b * xStride;
                float* xs = xScales + (long)b * scaleStride;
                Vector256<float> a = default;
                for (int k = 0; k < blocks; k++) {
                    var dot = Dot32(T.Block(row, k), Avx.LoadVector256(xb + k * Q8.BlockSize));
                    a = Fma.MultiplyAdd(Avx.ConvertToVector256Single(dot), Vector256.Create(rowScales[k] * xs[k]), a);
                }
                Store(w, r, Vector256.Sum(a), y + (long)b * yStride + r, accumulate);
            }
        }
    }
}
