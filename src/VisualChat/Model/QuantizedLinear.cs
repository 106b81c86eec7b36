using TorchSharp;
using VisualChat.Kernels;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// A linear layer whose weight is stored in a block format, as <c>vchat quantize</c> writes them: q8 (<see cref="Q8"/>,
/// <c>weight</c> int8 [out, in]) or q4 (<see cref="Q4"/>, <c>weight</c> uint8 [out, in / 2], two 4-bit codes per byte),
/// with <c>weight_scale</c> fp32 [out, in / 32]. Decoding reads them directly with integer dot products; a libtorch
/// forward (prefill, evaluation) dequantizes one layer at a time, so the model never holds an fp32 copy of all its
/// weights.
/// </summary>
public sealed class QuantizedLinear : nn.Module<Tensor, Tensor>
{
    static readonly Scalar Sixteen = 16f.ToScalar(), Eight = 8f.ToScalar();   // held: see TorchScalars

    public readonly TorchSharp.Modules.Parameter weight;
    public readonly TorchSharp.Modules.Parameter weight_scale;
    public readonly TorchSharp.Modules.Parameter? bias;

    public QuantizedLinear(long inFeatures, long outFeatures, bool hasBias, int bits = 8) : base(nameof(QuantizedLinear))
    {
        if (bits is not (8 or 4)) throw new ArgumentOutOfRangeException(nameof(bits), $"Quantized layers have 8 or 4 bits per weight, not {bits}.");
        if (inFeatures % Q8.BlockSize != 0)
            throw new ArgumentException($"q{bits} quantization needs input widths that are multiples of {Q8.BlockSize}; this layer has {inFeatures}.", nameof(inFeatures));
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        Bits = bits;
        // Uninitialised: a q8 layer's blocks always come from a checkpoint or from Quantize, and a memory-mapped load
        // replaces the storage, so writing zeros first would touch gigabytes for nothing.
        weight = new TorchSharp.Modules.Parameter(bits == 8
            ? empty(outFeatures, inFeatures, dtype: ScalarType.Int8)
            : empty(outFeatures, inFeatures / 2, dtype: ScalarType.Byte), requires_grad: false);
        weight_scale = new TorchSharp.Modules.Parameter(empty(outFeatures, inFeatures / Q8.BlockSize), requires_grad: false);
        if (hasBias) bias = new TorchSharp.Modules.Parameter(empty(outFeatures), requires_grad: false);
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }
    /// <summary>8 (q8) or 4 (q4).</summary>
    public int Bits { get; }

    /// <summary>The fp32 weight [out, in] these blocks stand for (scale × int8, or scale × (code − 8)).</summary>
    public Tensor Dequantize()
    {
        using var scope = NewDisposeScope();
        Tensor blocks;
        if (Bits == 8) {
            blocks = weight.to(ScalarType.Float32).view(OutFeatures, InFeatures / Q8.BlockSize, Q8.BlockSize);
        } else {
            // Byte i of a block: code of weight i in the low nibble, of weight i + 16 in the high one.
            var bytes = weight.to(ScalarType.Float32).view(OutFeatures, InFeatures / Q4.BlockSize, Q4.BlockBytes);
            var high = bytes.div(Sixteen).floor_();
            var low = bytes - high.mul(Sixteen);
            blocks = cat(new[] { low, high }, -1).sub_(Eight);
        }
        return (blocks * weight_scale.unsqueeze(-1)).view(OutFeatures, InFeatures).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        using var weights = Dequantize();
        return nn.functional.linear(input, weights.to(input.dtype), bias?.to(input.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>Quantizes an fp32/bf16 [out, in] weight into this layer's blocks.</summary>
    public unsafe void Quantize(Tensor source, Tensor? sourceBias = null)
    {
        if (source.dim() != 2 || source.shape[0] != OutFeatures || source.shape[1] != InFeatures)
            throw new ArgumentException($"Expected a [{OutFeatures}, {InFeatures}] weight to quantize, got [{string.Join(", ", source.shape)}].", nameof(source));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var rows = source.to(ScalarType.Float32).cpu().contiguous();
        float* x = (float*)Weights.TensorMemory.Pointer(rows);
        byte* q = (byte*)Weights.TensorMemory.Pointer(weight);
        float* s = (float*)Weights.TensorMemory.Pointer(weight_scale);
        // One row at a time: the block scales of a row never depend on another row.
        long rowBytes = InFeatures * Bits / 8;
        for (long r = 0; r < OutFeatures; r++) {
            if (Bits == 8) Q8.Quantize(x + r * InFeatures, (int)InFeatures, (sbyte*)q + r * rowBytes, s + r * (InFeatures / Q8.BlockSize));
            else Q4.Quantize(x + r * InFeatures, (int)InFeatures, q + r * rowBytes, s + r * (InFeatures / Q4.BlockSize));
        }
        if (bias is not null && sourceBias is not null) bias.copy_(sourceBias.to(ScalarType.Float32));
    }
}
