using TorchSharp;
using VisualChat.Kernels;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// A linear layer whose weight is stored in the q8 block format (<see cref="Q8"/>): <c>weight</c> int8 [out, in] and
/// <c>weight_scale</c> fp32 [out, in / 32], as <c>vchat quantize</c> writes them. Decoding reads them directly with
/// integer dot products; a libtorch forward (prefill, evaluation) dequantizes one layer at a time, so the model never
/// holds an fp32 copy of all its weights.
/// </summary>
public sealed class QuantizedLinear : nn.Module<Tensor, Tensor>
{
    public readonly TorchSharp.Modules.Parameter weight;
    public readonly TorchSharp.Modules.Parameter weight_scale;
    public readonly TorchSharp.Modules.Parameter? bias;

    public QuantizedLinear(long inFeatures, long outFeatures, bool hasBias) : base(nameof(QuantizedLinear))
    {
        if (inFeatures % Q8.BlockSize != 0)
            throw new ArgumentException($"q8 quantization needs input widths that are multiples of {Q8.BlockSize}; this layer has {inFeatures}.", nameof(inFeatures));
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        // Uninitialised: a q8 layer's blocks always come from a checkpoint or from Quantize, and a memory-mapped load
        // replaces the storage, so writing zeros first would touch gigabytes for nothing.
        weight = new TorchSharp.Modules.Parameter(empty(outFeatures, inFeatures, dtype: ScalarType.Int8), requires_grad: false);
        weight_scale = new TorchSharp.Modules.Parameter(empty(outFeatures, inFeatures / Q8.BlockSize), requires_grad: false);
        if (hasBias) bias = new TorchSharp.Modules.Parameter(empty(outFeatures), requires_grad: false);
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }

    /// <summary>The fp32 weight [out, in] these blocks stand for (scale × int8).</summary>
    public Tensor Dequantize()
    {
        using var scope = NewDisposeScope();
        var blocks = weight.to(ScalarType.Float32).view(OutFeatures, InFeatures / Q8.BlockSize, Q8.BlockSize);
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
        sbyte* q = (sbyte*)Weights.TensorMemory.Pointer(weight);
        float* s = (float*)Weights.TensorMemory.Pointer(weight_scale);
        // One row at a time: the block scales of a row never depend on another row.
        for (long r = 0; r < OutFeatures; r++)
            Q8.Quantize(x + r * InFeatures, (int)InFeatures, q + r * InFeatures, s + r * (InFeatures / Q8.BlockSize));
        if (bias is not null && sourceBias is not null) bias.copy_(sourceBias.to(ScalarType.Float32));
    }
}
