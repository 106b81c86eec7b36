using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat;

/// <summary>
/// Random initialisation drawn from a caller's <see cref="Generator"/>, never from libtorch's process-wide one: two
/// models built with the same seed get the same weights even while other threads reseed or draw from the global
/// generator. TorchSharp 0.107's <c>nn.init</c> functions ignore their generator argument, so every value here is drawn
/// with <c>rand</c>/<c>randn</c>(generator:) and copied in. The layers' own constructors still run their default init
/// (from the global generator); those values are overwritten and never used.
/// </summary>
public static class GeneratorInit
{
    /// <summary>A generator for building one model part: seeded from <paramref name="seed"/> and <paramref name="stream"/>
    /// (distinct parts get distinct streams so they do not share draws), or, without a seed, from one draw of
    /// libtorch's generator so that <c>torch.manual_seed</c> still makes an unseeded construction reproducible.</summary>
    public static Generator Create(long? seed, int stream = 0)
    {
        long baseSeed;
        if (seed is { } s)
        {
            baseSeed = s;
        }
        else {
            using var drawn = randint(int.MaxValue, [1], dtype: ScalarType.Int64);
            baseSeed = drawn.item<long>();
        }
        ulong mixed = unchecked((ulong)baseSeed + (ulong)stream * 0x9E3779B97F4A7C15UL);
        return new Generator(mixed);
    }

    /// <summary>Fills <paramref name="target"/> with U(-bound, bound).</summary>
    public static void Uniform(Tensor target, double bound, Generator generator)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var width = (2 * bound).ToScalar();
        using var low = bound.ToScalar();
        target.copy_(rand(target.shape, dtype: ScalarType.Float32, generator: generator).mul_(width).sub_(low));
    }

    /// <summary>Fills <paramref name="target"/> with N(0, std²).</summary>
    public static void Normal(Tensor target, double std, Generator generator)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var scale = std.ToScalar();
        target.copy_(randn(target.shape, dtype: ScalarType.Float32, generator: generator).mul_(scale));
    }

    /// <summary>N(0, std²) truncated to [-2, 2] (the absolute bounds of <c>nn.init.trunc_normal_</c>): out-of-range draws
    /// are redrawn.</summary>
    public static void TruncatedNormal(Tensor target, double std, Generator generator)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var scale = std.ToScalar();
        using var limit = 2.0.ToScalar();
        var values = randn(target.shape, dtype: ScalarType.Float32, generator: generator).mul_(scale);
        for (var outside = values.abs().gt(limit); outside.any().item<bool>(); outside = values.abs().gt(limit))
            values = where(outside, randn(target.shape, dtype: ScalarType.Float32, generator: generator).mul_(scale), values);
        target.copy_(values);
    }

    /// <summary>PyTorch's default <c>nn.Linear</c> init (kaiming_uniform with a = √5): weight and bias ~ U(±1/√fan_in).</summary>
    public static void Linear(Linear linear, Generator generator)
    {
        double bound = 1.0 / Math.Sqrt(linear.weight!.shape[1]);
        Uniform(linear.weight!, bound, generator);
        if (linear.bias is { } bias) Uniform(bias, bound, generator);
    }

    /// <summary>
    /// Re-draws every parameter of <paramref name="module"/> as PyTorch's default init of its layer would: Linear as
    /// <see cref="Linear"/>, LayerNorm weight 1 and bias 0, Embedding ~ N(0, 1). A parameter held by any other kind of
    /// module throws (naming it), so a new layer type cannot silently keep weights from the global generator.
    /// </summary>
    public static void ResetDefaults(nn.Module module, Generator generator)
    {
        var covered = new HashSet<string>(StringComparer.Ordinal);
        using var noGrad = no_grad();
        var modules = new List<(string Name, nn.Module Module)> { ("", module) };
        modules.AddRange(module.named_modules().Where(m => !ReferenceEquals(m.module, module)));
        foreach (var (name, child) in modules) {
            string prefix = name.Length == 0 ? "" : name + ".";
            switch (child) {
                case Linear linear:
                    Linear(linear, generator);
                    break;
                case LayerNorm norm:
                    norm.weight?.fill_(TorchScalars.One);
                    norm.bias?.zero_();
                    break;
                case Embedding embedding:
                    Normal(embedding.weight!, 1.0, generator);
                    break;
                default:
                    continue;
            }
            foreach (var (parameterName, _) in child.named_parameters(recurse: false)) covered.Add(prefix + parameterName);
        }
        var missed = module.named_parameters().Select(p => p.name).Where(n => !covered.Contains(n)).ToList();
        if (missed.Count > 0)
            throw new InvalidOperationException($"{module.GetType().Name}: no default initialisation for {string.Join(", ", missed)}; initialise them explicitly from the generator.");
    }
}
