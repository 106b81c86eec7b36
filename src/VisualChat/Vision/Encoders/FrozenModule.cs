using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>Shared freeze/unfreeze plumbing for vision modules.</summary>
internal static class FrozenModule
{
    public static void SetTrainable(nn.Module module, bool trainable)
    {
        foreach (var parameter in module.parameters())
            parameter.requires_grad = trainable;
        if (!trainable) module.eval();
    }

    /// <summary>True when no parameter requires grad (buffers such as sin-cos tables are ignored).</summary>
    public static bool IsFrozen(nn.Module module) => module.parameters().All(p => !p.requires_grad);

    /// <summary>Runs <paramref name="encode"/> under no_grad when the module is frozen; the result leaves the caller's dispose scope untouched.</summary>
    public static Tensor Run(nn.Module module, Func<Tensor> encode)
    {
        if (!IsFrozen(module)) return encode();
        using var noGrad = no_grad();
        return encode();
    }
}
