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
}
