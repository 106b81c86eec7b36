using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// Rotary position embedding with HF's scaling variants. cos/sin are computed in fp32 from the position ids and
/// returned in the dtype of the activations, as HF does.
/// </summary>
internal sealed class LlamaRotaryEmbedding : nn.Module<Tensor, Tensor, (Tensor cos, Tensor sin)>
{
    readonly int dim;
    readonly double baseTheta;
    readonly int maxPositionEmbeddings;
    readonly string kind;
    readonly double factor;
    // Kept on the host too, so a module cast to bf16 still rotates with fp32-exact frequencies.
    readonly double[] invFreqHost;
    readonly Tensor inv_freq;
    Tensor? invFreqOnDevice;

    public LlamaRotaryEmbedding(LlamaConfig config) : base(nameof(LlamaRotaryEmbedding))
    {
        dim = config.HeadDim;
        baseTheta = config.RopeTheta;
        maxPositionEmbeddings = config.MaxPositionEmbeddings;
        kind = config.RopeScaling?.Kind ?? "default";
        factor = config.RopeScaling?.Factor ?? 1.0;
        invFreqHost = InverseFrequencies(dim, baseTheta);
        if (kind == "linear") invFreqHost = invFreqHost.Select(f => f / factor).ToArray();
        if (kind == "llama3") invFreqHost = Llama3Frequencies(invFreqHost, config.RopeScaling!);
        inv_freq = tensor(invFreqHost.Select(f => (float)f).ToArray());
        // Not part of HF checkpoints: recomputed from the config, so it must stay out of state_dict.
        register_buffer(nameof(inv_freq), inv_freq, persistent: false);
        RegisterComponents();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) invFreqOnDevice?.Dispose();
        base.Dispose(disposing);
    }

    /// <summary>The (scaled) inverse frequencies before any dynamic NTK growth, one per rotated pair.</summary>
    public IReadOnlyList<double> InverseFrequency => invFreqHost;

    public static double[] InverseFrequencies(int dim, double theta)
    {
        var result = new double[dim / 2];
        // HF: 1 / base ** (arange(0, dim, 2).float() / dim), evaluated in fp32.
        for (int i = 0; i < result.Length; i++)
            result[i] = 1.0f / MathF.Pow((float)theta, (float)(2 * i) / dim);
        return result;
    }

    static double[] Llama3Frequencies(double[] invFreq, RopeScalingConfig s)
    {
        double oldContext = s.OriginalMaxPositionEmbeddings!.Value, low = s.LowFreqFactor!.Value, high = s.HighFreqFactor!.Value;
        double lowWavelen = oldContext / low, highWavelen = oldContext / high;
        return invFreq.Select(f => {
            double wavelen = 2 * Math.PI / f;
            if (wavelen < highWavelen) return f;
            if (wavelen > lowWavelen) return f / s.Factor;
            double smooth = (oldContext / wavelen - low) / (high - low);
            return (1 - smooth) * f / s.Factor + smooth * f;
        }).ToArray();
    }

    /// <summary>cos and sin of shape [B, L, head_dim] for <paramref name="position_ids"/> [B, L], in <paramref name="x"/>'s dtype.</summary>
    public override (Tensor cos, Tensor sin) forward(Tensor x, Tensor position_ids)
    {
        using var scope = NewDisposeScope();
        var freqs = CurrentInverseFrequencies(position_ids, x.device);
        var positions = position_ids.to(ScalarType.Float32).unsqueeze(-1);               // [B, L, 1]
        var angles = positions * freqs.view(1, 1, -1);                                    // [B, L, dim/2]
        var emb = cat(new[] { angles, angles }, -1);
        var cos = emb.cos().to(x.dtype);
        var sin = emb.sin().to(x.dtype);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    Tensor CurrentInverseFrequencies(Tensor positionIds, Device device)
    {
        if (kind == "dynamic") {
            long seqLen = positionIds.numel() == 0 ? 0 : positionIds.max().item<long>() + 1;
            if (seqLen > maxPositionEmbeddings) {
                // HF dynamic NTK: grow the base once the sequence outgrows the trained context.
                double grownBase = baseTheta * Math.Pow(factor * seqLen / maxPositionEmbeddings - (factor - 1), dim / (dim - 2.0));
                return tensor(InverseFrequencies(dim, grownBase).Select(f => (float)f).ToArray(), device: device);
            }
        }
        if (inv_freq.dtype == ScalarType.Float32 && inv_freq.device == device) return inv_freq.alias();
        // TorchSharp's Module.to skips non-persistent buffers, so keep one fp32 copy per device ourselves.
        if (invFreqOnDevice is null || invFreqOnDevice.device != device) {
            invFreqOnDevice?.Dispose();
            invFreqOnDevice = tensor(invFreqHost.Select(f => (float)f).ToArray(), device: device).DetachFromDisposeScope();
        }
        return invFreqOnDevice.alias();
    }

    /// <summary>HF rotate_half: (x1, x2) → (−x2, x1) over the two halves of the last dimension.</summary>
    public static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        return cat(new[] { -x2, x1 }, -1);
    }

    /// <summary>HF apply_rotary_pos_emb for q, k [B, heads, L, D] and cos, sin [B, L, D].</summary>
    public static (Tensor q, Tensor k) ApplyRotaryPosEmb(Tensor q, Tensor k, Tensor cos, Tensor sin)
    {
        var c = cos.unsqueeze(1);
        var s = sin.unsqueeze(1);
        return ((q * c).add(RotateHalf(q) * s, TorchScalars.One), (k * c).add(RotateHalf(k) * s, TorchScalars.One));
    }
}
