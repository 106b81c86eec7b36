using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace VisualChat.Kernels;

/// <summary>
/// The q8 block format (as llama.cpp's Q8_0): each run of <see cref="BlockSize"/> consecutive values along a row is
/// stored as int8 q = round(x / s) with one fp32 scale s = max|x| / 127, so x ≈ s·q. Weights are quantized once when a
/// model is quantized; decode quantizes each activation vector the same way before the integer dot products.
/// </summary>
internal static unsafe class Q8
{
    public const int BlockSize = 32;

    /// <summary>Quantizes <paramref name="count"/> values (a multiple of <see cref="BlockSize"/>) into
    /// <paramref name="q"/> and one scale per block into <paramref name="scales"/>. Rounds half to even (as
    /// <c>vcvtps2dq</c> does), in the vector and the scalar path alike.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Quantize(float* x, int count, sbyte* q, float* scales)
    {
        for (int block = 0; block < count / BlockSize; block++) {
            float* xs = x + block * BlockSize;
            sbyte* qs = q + block * BlockSize;
            if (Avx2.IsSupported) {
                var v0 = Avx.LoadVector256(xs);
                var v1 = Avx.LoadVector256(xs + 8);
                var v2 = Avx.LoadVector256(xs + 16);
                var v3 = Avx.LoadVector256(xs + 24);
                var magnitude = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
                float max = magnitude.ToScalar();
                for (int i = 1; i < 8; i++) max = MathF.Max(max, magnitude.GetElement(i));
                float scale = max / 127f;
                scales[block] = scale;
                var inverse = Vector256.Create(scale > 0 ? 1f / scale : 0f);
                // |x·inverse| ≤ 127 up to rounding, so the saturating packs only clamp what rounding pushed past 127.
                var i0 = Avx.ConvertToVector256Int32(Avx.Multiply(v0, inverse));
                var i1 = Avx.ConvertToVector256Int32(Avx.Multiply(v1, inverse));
                var i2 = Avx.ConvertToVector256Int32(Avx.Multiply(v2, inverse));
                var i3 = Avx.ConvertToVector256Int32(Avx.Multiply(v3, inverse));
                var shorts01 = Avx2.PackSignedSaturate(i0, i1);   // lanes interleaved by 128-bit halves
                var shorts23 = Avx2.PackSignedSaturate(i2, i3);
                var bytes = Avx2.PackSignedSaturate(shorts01, shorts23);
                // Undo the per-half interleaving of the two packs: dword order 0 4 1 5 2 6 3 7.
                bytes = Avx2.PermuteVar8x32(bytes.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsSByte();
                Avx.Store(qs, Vector256.Max(bytes, Vector256.Create((sbyte)-127)));
                continue;
            }
            float m = 0;
            for (int i = 0; i < BlockSize; i++) m = MathF.Max(m, MathF.Abs(xs[i]));
            float s = m / 127f;
            float inv = s > 0 ? 1f / s : 0f;
            for (int i = 0; i < BlockSize; i++) qs[i] = (sbyte)Math.Clamp(MathF.Round(xs[i] * inv, MidpointRounding.ToEven), -127f, 127f);
            scales[block] = s;
        }
    }

    /// <summary>The values a quantized run stands for: s·q.</summary>
    public static void Dequantize(sbyte* q, float* scales, int count, float* x)
    {
        for (int i = 0; i < count; i++) x[i] = scales[i / BlockSize] * q[i];
    }
}
