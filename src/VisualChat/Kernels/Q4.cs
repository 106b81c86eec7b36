using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace VisualChat.Kernels;

/// <summary>
/// The q4 block format (llama.cpp's Q4_0 layout with an fp32 scale): each run of <see cref="BlockSize"/> weights along
/// a row is stored as 16 bytes of 4-bit codes c ∈ [0, 15] and one scale s, standing for s·(c − 8). Byte i of a block
/// holds weight i in its low nibble and weight i + 16 in its high nibble. s = m / −8 where m is the block's value of
/// largest magnitude, so m itself is exactly code 0 and the other values use all 16 levels. Only weights are stored so;
/// decode quantizes activations to q8 blocks, as for q8 weights.
/// </summary>
internal static unsafe class Q4
{
    public const int BlockSize = Q8.BlockSize;
    /// <summary>Bytes of codes per block.</summary>
    public const int BlockBytes = BlockSize / 2;

    /// <summary>Quantizes a row of <paramref name="count"/> values (a multiple of <see cref="BlockSize"/>) into
    /// <paramref name="codes"/> (count / 2 bytes) and one scale per block. Rounds half to even.</summary>
    public static void Quantize(float* x, int count, byte* codes, float* scales)
    {
        for (int block = 0; block < count / BlockSize; block++) {
            float* xs = x + block * BlockSize;
            float m = 0;
            for (int i = 0; i < BlockSize; i++)
                if (MathF.Abs(xs[i]) > MathF.Abs(m)) m = xs[i];
            float s = m / -8f;
            float inverse = s != 0 ? 1f / s : 0f;
            byte* cs = codes + block * BlockBytes;
            for (int i = 0; i < BlockBytes; i++) {
                int low = Code(xs[i] * inverse), high = Code(xs[i + BlockBytes] * inverse);
                cs[i] = (byte)(low | (high << 4));
            }
            scales[block] = s;
        }
    }

    static int Code(float scaled) => (int)Math.Clamp(MathF.Round(scaled, MidpointRounding.ToEven) + 8, 0, 15);

    /// <summary>The values a quantized row stands for: s·(c − 8).</summary>
    public static void Dequantize(byte* codes, float* scales, int count, float* x)
    {
        for (int i = 0; i < count; i++) {
            int block = i / BlockSize, within = i % BlockSize;
            byte b = codes[block * BlockBytes + within % BlockBytes];
            int code = within < BlockBytes ? b & 0xF : b >> 4;
            x[i] = scales[block] * (code - 8);
        }
    }

    /// <summary>One block's 32 weights as signed bytes c − 8, in order (AVX2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Unpack(byte* block)
    {
        var packed = Sse2.LoadVector128(block);
        var mask = Vector128.Create((byte)0xF);
        var low = Sse2.And(packed, mask);
        var high = Sse2.And(Sse2.ShiftRightLogical(packed.AsUInt16(), 4).AsByte(), mask);
        return Avx2.Subtract(Vector256.Create(low, high), Vector256.Create((byte)8)).AsSByte();
    }
}
