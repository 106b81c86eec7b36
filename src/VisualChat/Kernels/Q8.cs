using System.Runtime.CompilerServices;
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
    /// <paramref name="q"/> and one scale per block into <paramref name="scales"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Quantize(float* x, int count, sbyte* q, float* scales)
    {
        for (int block = 0; block < count / BlockSize; block++) {
            float* xs = x + block * BlockSize;
            float max = 0;
            for (int i = 0; i < BlockSize; i++) max = MathF.Max(max, MathF.Abs(xs[i]));
            float scale = max / 127f;
            float inverse = scale > 0 ? 1f / scale : 0f;
            for (int i = 0; i < BlockSize; i++) q[block * BlockSize + i] = (sbyte)Math.Clamp(MathF.Round(xs[i] * inverse), -127f, 127f);
            scales[block] = scale;
        }
    }

    /// <summary>The values a quantized run stands for: s·q.</summary>
    public static void Dequantize(sbyte* q, float* scales, int count, float* x)
    {
        for (int i = 0; i < count; i++) x[i] = scales[i / BlockSize] * q[i];
    }
}
