using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>The two activations CLIP-family checkpoints use, by their HF names.</summary>
public static class VisionActivations
{
    /// <summary>OpenAI CLIP's approximation: x * sigmoid(1.702 x).</summary>
    public static Tensor QuickGelu(Tensor x) => x * sigmoid(x.mul(QuickGeluSlope));

    private static readonly Scalar QuickGeluSlope = 1.702.ToScalar();   // held: see TorchScalars

    /// <summary>Exact (erf) GELU, as HF "gelu" and torch.nn.GELU().</summary>
    public static Tensor Gelu(Tensor x) => nn.functional.gelu(x);

    public static Func<Tensor, Tensor> Resolve(string name) => name switch
    {
        "quick_gelu" => QuickGelu,
        "gelu" => Gelu,
        _ => throw new ArgumentException($"Activation '{name}' is not supported; use quick_gelu or gelu.", nameof(name)),
    };

    public static void Validate(string name, string where)
    {
        if (name != "quick_gelu" && name != "gelu")
            throw new InvalidDataException($"{where} is '{name}'; only quick_gelu and gelu are supported.");
    }
}
