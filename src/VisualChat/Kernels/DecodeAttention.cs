using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace VisualChat.Kernels;

/// <summary>
/// Attention of one new text position over a sequence's cached keys and values, for the query heads that share one KV
/// head. Plain causal attention is one softmax over every cached position; multi-modal causal attention (the
/// <c>mmca</c> mode, see <c>MultiModalCausalAttention</c>) takes one softmax over text keys and a second over image
/// keys and sums the two outputs. Padding positions are never attended.
/// </summary>
internal static unsafe class DecodeAttention
{
    const long Padding = 0, Text = 1, Image = 2;   // TokenModality values

    /// <param name="queries">[groups, headDim] fp32, rotated.</param>
    /// <param name="keys">This KV head's [length, headDim] rows (fp32, or bf16 when <paramref name="bf16"/>).</param>
    /// <param name="modality">Per cached position (TokenModality), or null: every position is text.</param>
    /// <param name="scores">Scratch of at least <paramref name="length"/> floats.</param>
    /// <param name="output">[groups, headDim], overwritten.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Attend(float* queries, int groups, int headDim, void* keys, void* values, bool bf16, int length,
        long* modality, bool multiModal, float scale, float* scores, float* output)
    {
        if (!bf16 && Vector512.IsHardwareAccelerated && headDim % 64 == 0) {
            AttendWide(queries, groups, headDim, (float*)keys, (float*)values, length, modality, multiModal, scale, scores, output);
            return;
        }
        for (int g = 0; g < groups; g++) {
            float* q = queries + (long)g * headDim;
            float* o = output + (long)g * headDim;
            new Span<float>(o, headDim).Clear();
            float textMax = float.NegativeInfinity, imageMax = float.NegativeInfinity;
            for (int j = 0; j < length; j++) {
                long kind = Kind(modality, j, multiModal);
                if (kind == Padding) continue;
                float s = Dot(q, Row(keys, j, headDim, bf16), bf16, headDim) * scale;
                scores[j] = s;
                if (kind == Text) textMax = MathF.Max(textMax, s);
                else imageMax = MathF.Max(imageMax, s);
            }
            float textSum = 0, imageSum = 0;
            for (int j = 0; j < length; j++) {
                long kind = Kind(modality, j, multiModal);
                if (kind == Padding) continue;
                float e = MathF.Exp(scores[j] - (kind == Text ? textMax : imageMax));
                scores[j] = e;
                if (kind == Text) textSum += e;
                else imageSum += e;
            }
            float textScale = textSum > 0 ? 1 / textSum : 0, imageScale = imageSum > 0 ? 1 / imageSum : 0;
            for (int j = 0; j < length; j++) {
                long kind = Kind(modality, j, multiModal);
                if (kind == Padding) continue;
                AddScaled(o, scores[j] * (kind == Text ? textScale : imageScale), Row(values, j, headDim, bf16), bf16, headDim);
            }
        }
    }

    /// <summary>fp32 keys and values with 512-bit vectors: the weighted sum of values is kept in four registers per 64
    /// dimensions across all positions and stored once (the general path reads and writes the output per position), and
    /// the exponentials are taken 16 at a time. The same softmaxes over the same positions; dot products sum in another
    /// order and <c>Vector512.Exp</c> rounds unlike <c>MathF.Exp</c>, both within float rounding.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void AttendWide(float* queries, int groups, int headDim, float* keys, float* values, int length,
        long* modality, bool multiModal, float scale, float* scores, float* output)
    {
        for (int g = 0; g < groups; g++) {
            float* q = queries + (long)g * headDim;
            float* o = output + (long)g * headDim;
            float textMax = float.NegativeInfinity, imageMax = float.NegativeInfinity;
            for (int j = 0; j < length; j++) {
                long kind = Kind(modality, j, multiModal);
                if (kind == Padding) continue;
                float* k = keys + (long)j * headDim;
                var acc = Vector512.Multiply(Vector512.Load(q), Vector512.Load(k));
                for (int i = 16; i < headDim; i += 16) acc = Vector512.FusedMultiplyAdd(Vector512.Load(q + i), Vector512.Load(k + i), acc);
                float score = MatVec.Sum(acc) * scale;
                scores[j] = score;
                if (kind == Text) textMax = MathF.Max(textMax, score);
                else imageMax = MathF.Max(imageMax, score);
            }
            for (int j = 0; j < length; j++) {
                long kind = Kind(modality, j, multiModal);
                scores[j] = kind == Padding ? float.NegativeInfinity : scores[j] - (kind == Text ? textMax : imageMax);
            }
            // exp(−∞) = 0: padding positions weigh nothing from here on.
            int vectorEnd = length & ~15;
            for (int j = 0; j < vectorEnd; j += 16) Vector512.Exp(Vector512.Load(scores + j)).Store(scores + j);
            for (int j = vectorEnd; j < length; j++) scores[j] = MathF.Exp(scores[j]);
            float textSum = 0, imageSum = 0;
            for (int j = 0; j < length; j++) {
                if (Kind(modality, j, multiModal) == Image) imageSum += scores[j];
                else textSum += scores[j];
            }
            float textScale = textSum > 0 ? 1 / textSum : 0, imageScale = imageSum > 0 ? 1 / imageSum : 0;
            if (modality is null || !multiModal) {
                for (int j = 0; j < length; j++) scores[j] *= textScale;
            } else {
                for (int j = 0; j < length; j++) scores[j] *= modality[j] == Image ? imageScale : textScale;
            }
            // Padding positions now weigh 0, so every position is summed without a branch.
            for (int d = 0; d < headDim; d += 64) {
                Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
                float* v = values + d;
                for (int j = 0; j < length; j++, v += headDim) {
                    var a = Vector512.Create(scores[j]);
                    o0 = Vector512.FusedMultiplyAdd(a, Vector512.Load(v), o0);
                    o1 = Vector512.FusedMultiplyAdd(a, Vector512.Load(v + 16), o1);
                    o2 = Vector512.FusedMultiplyAdd(a, Vector512.Load(v + 32), o2);
                    o3 = Vector512.FusedMultiplyAdd(a, Vector512.Load(v + 48), o3);
                }
                o0.Store(o + d);
                o1.Store(o + d + 16);
                o2.Store(o + d + 32);
                o3.Store(o + d + 48);
            }
        }
    }

    /// <summary>Causal attention treats images as ordinary positions; mmca separates them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static long Kind(long* modality, int j, bool multiModal)
    {
        if (modality is null) return Text;
        long m = modality[j];
        return m == Padding ? Padding : multiModal ? m : Text;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void* Row(void* rows, int j, int headDim, bool bf16) => (byte*)rows + (long)j * headDim * (bf16 ? 2 : 4);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Load(void* p, int k, bool bf16) => bf16
        ? Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Sse2.LoadVector128((ushort*)p + k)), 16).AsSingle()
        : Avx.LoadVector256((float*)p + k);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Scalar(void* p, int k, bool bf16) => bf16 ? MatVec.BF16ToFloat(((ushort*)p)[k]) : ((float*)p)[k];

    static float Dot(float* q, void* k, bool bf16, int n)
    {
        Vector256<float> acc = default;
        int i = 0;
        for (; i + 8 <= n; i += 8) acc = Fma.MultiplyAdd(Avx.LoadVector256(q + i), Load(k, i, bf16), acc);
        float s = Vector256.Sum(acc);
        for (; i < n; i++) s += q[i] * Scalar(k, i, bf16);
        return s;
    }

    static void AddScaled(float* o, float a, void* v, bool bf16, int n)
    {
        var av = Vector256.Create(a);
        int i = 0;
        for (; i + 8 <= n; i += 8) Avx.Store(o + i, Fma.MultiplyAdd(av, Load(v, i, bf16), Avx.LoadVector256(o + i)));
        for (; i < n; i++) o[i] += a * Scalar(v, i, bf16);
    }

    /// <summary>HF rotate_half RoPE of one head in place: x[i] and x[i + D/2] rotate by angle position·invFreq[i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rotate(float* x, int headDim, float* cos, float* sin)
    {
        int half = headDim / 2;
        for (int i = 0; i < half; i++) {
            float a = x[i], b = x[i + half];
            x[i] = a * cos[i] - b * sin[i];
            x[i + half] = b * cos[i + half] + a * sin[i + half];
        }
    }
}
