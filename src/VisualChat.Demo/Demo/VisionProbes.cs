using TorchSharp.Modules;
using VisualChat.Data.Synthetic;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>The encoder under pretraining with its three linear probes (kind, colour, count) on the mean of its output
/// tokens; one module so the trainer sees all trained tensors. Only the encoder goes on after pretraining.</summary>
public sealed class VisionProbes : nn.Module
{
    public readonly ClipVisionModel encoder;
    public readonly Linear kind;
    public readonly Linear colour;
    public readonly Linear count;

    public VisionProbes(ClipVisionModel encoder, int width) : base(nameof(VisionProbes))
    {
        this.encoder = encoder;
        kind = nn.Linear(width, Enum.GetValues<ShapeKind>().Length);
        colour = nn.Linear(width, Enum.GetValues<ShapeColor>().Length);
        count = nn.Linear(width, 4);
        RegisterComponents();
    }

    public (Tensor Kind, Tensor Colour, Tensor Count) Heads(Tensor pixels)
    {
        var pooled = encoder.forward(pixels).mean([1]);
        return (kind.forward(pooled), colour.forward(pooled), count.forward(pooled));
    }

    /// <summary>Kind, colour and count − 1 of each scene: [N, 3].</summary>
    public static Tensor Targets(IReadOnlyList<ShapeScene> scenes) =>
        tensor(scenes.SelectMany(s => new long[] { (long)s.Kind, (long)s.Color, s.Count - 1 }).ToArray(), [scenes.Count, 3]);
}
