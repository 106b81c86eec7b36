using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>Linear layers for the LLaMA modules, optionally without the default init when weights are loaded next.</summary>
public static class LlamaLinear
{
    /// <param name="initialize">False leaves the weights uninitialised memory: only for modules whose weights are about
    /// to be overwritten by a checkpoint, where the default Kaiming init would be a wasted pass over every weight.</param>
    public static Linear Create(long inFeatures, long outFeatures, bool hasBias, bool initialize)
    {
        if (initialize) return nn.Linear(inFeatures, outFeatures, hasBias: hasBias);
        return nn.Linear(new Parameter(empty(outFeatures, inFeatures)), hasBias ? new Parameter(empty(outFeatures)) : null);
    }

    /// <summary>A projection slot of <paramref name="config"/>'s decoder: a <see cref="QuantizedLinear"/> in a quantized
    /// model (its weights are always loaded), else a <see cref="Linear"/>.</summary>
    public static nn.Module<Tensor, Tensor> Create(LlamaConfig config, long inFeatures, long outFeatures, bool hasBias, bool initialize)
    {
        if (config.Quantization is { } q) return new QuantizedLinear(inFeatures, outFeatures, hasBias, q.Bits);
        return Create(inFeatures, outFeatures, hasBias, initialize);
    }
}

/// <summary>Weight access for projection slots that hold a plain <see cref="Linear"/> or an adapter wrapping one
/// (the LLaMA projections are typed as modules so LoRA can replace them).</summary>
public static class LinearSlot
{
    /// <summary>The [out, in] weight of a Linear, or of the Linear an adapter wraps (its <c>base_layer</c>).</summary>
    public static Tensor Weight(this nn.Module<Tensor, Tensor> layer) => layer switch
    {
        Linear linear => linear.weight!,
        _ => layer.named_parameters().FirstOrDefault(p => p.name is "weight" or "base_layer.weight").parameter
             ?? throw new InvalidOperationException($"{layer.GetType().Name} holds no linear weight."),
    };
}
