using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Vision;

/// <summary>
/// Random initialisation as Hugging Face does it for these towers (initializer_range 0.02): weights of linear, conv
/// and embedding layers, class embedding, queries and position tables ~ N(0, 0.02); biases 0; LayerNorm weight 1 and
/// bias 0; the resampler's <c>attn_pool.pos_embed</c> is the fixed 2-D sin-cos table, exactly as the model builds it.
/// Tensors are drawn in ordinal key order from one generator seeded with the seed, so a folder written tensor by tensor
/// (<see cref="VisionPresets.Write"/>) and a module initialised in memory (<c>Initialize</c>) hold the same values.
/// </summary>
public static class VisionWeightInit
{
    public const double InitializerRange = 0.02;
    private static readonly Scalar InitializerRangeScalar = InitializerRange.ToScalar();   // held: see TorchScalars

    /// <summary>Fills every parameter of <paramref name="module"/> by the rule above.</summary>
    public static void Initialize(nn.Module module, int seed)
    {
        using var generator = new Generator((ulong)seed);
        Initialize(module, generator);
    }

    /// <summary>Fills every parameter of <paramref name="module"/> by the rule above, drawing from <paramref name="generator"/>.</summary>
    public static void Initialize(nn.Module module, Generator generator)
    {
        var stateDict = module.state_dict();
        using var noGrad = no_grad();
        foreach (var name in stateDict.Keys.OrderBy(k => k, StringComparer.Ordinal))
        {
            var target = stateDict[name];
            using var scope = NewDisposeScope();
            target.copy_(Generate(name, target.shape, generator));
        }
    }

    /// <summary>A new fp32 CPU tensor for the state_dict key <paramref name="name"/>; draws from <paramref name="generator"/> only for normal-initialised tensors.</summary>
    public static Tensor Generate(string name, long[] shape, Generator generator)
    {
        if (name == "attn_pool.pos_embed")
        {
            var grid = (int)Math.Round(Math.Sqrt(shape[0]));
            if (grid * grid != shape[0])
                throw new ArgumentException($"'{name}' has {shape[0]} rows; the sin-cos table needs a square number.", nameof(shape));
            return VisionPositionalEmbeddings.Get2dSinCos((int)shape[1], grid);
        }
        if (IsLayerNorm(name))
            return name.EndsWith(".weight", StringComparison.Ordinal) ? ones(shape) : zeros(shape);
        if (name.EndsWith(".bias", StringComparison.Ordinal) || name.EndsWith("_bias", StringComparison.Ordinal))
            return zeros(shape);
        return randn(shape, generator: generator).mul_(InitializerRangeScalar);
    }

    private static bool IsLayerNorm(string name)
    {
        var lastDot = name.LastIndexOf('.');
        if (lastDot < 0) return false;
        var modulePath = name[..lastDot];
        var module = modulePath[(modulePath.LastIndexOf('.') + 1)..];
        return module.StartsWith("ln_", StringComparison.Ordinal) || module.StartsWith("layer_norm", StringComparison.Ordinal)
               || module.EndsWith("layrnorm", StringComparison.Ordinal) || module.EndsWith("layernorm", StringComparison.Ordinal);
    }
}
