using TorchSharp;
using VisualChat.Data.Synthetic;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>Vision accuracy of the pretrained encoder's probe heads on held-out images.</summary>
public sealed record VisionReport(double KindAccuracy, double ColourAccuracy, double CountAccuracy, float FinalLoss);

/// <summary>
/// Stage 1: trains the tiny CLIP encoder from scratch to expose shape kind, colour and count — three linear probes on
/// the mean of its output tokens (<see cref="VisionProbes"/>) — through the project's trainer, then freezes it. The
/// probes are discarded; only the encoder goes on.
/// </summary>
public static class VisionPretraining
{
    public static ClipVisionConfig Config(DemoRecipe recipe) => new()
    {
        HiddenSize = recipe.VisionWidth, IntermediateSize = recipe.VisionWidth * 2, ProjectionDim = recipe.VisionWidth,
        NumHiddenLayers = recipe.VisionLayers, NumAttentionHeads = recipe.VisionHeads,
        ImageSize = recipe.ImageSize, PatchSize = recipe.PatchSize, HiddenAct = "quick_gelu", LayerNormEps = 1e-5,
    };

    /// <summary>The encoder and its probe heads, initialised from the recipe's seed. Separate from <see cref="Train"/>
    /// because initialisation draws from libtorch's global generator, which must not be shared with a stage that
    /// trains at the same time.</summary>
    public static VisionProbes Create(DemoRecipe recipe)
    {
        manual_seed(recipe.Seed + 11);
        return new VisionProbes(new ClipVisionModel(Config(recipe)), recipe.VisionWidth);
    }

    /// <summary>Trains on freshly drawn scenes every step (pictures are free to generate, so the encoder never sees one
    /// twice and cannot memorise), then freezes the encoder and reports probe accuracy on 500 held-out scenes.</summary>
    /// <param name="runDir">The trainer's output folder (metrics.jsonl).</param>
    public static (ClipVisionModel Encoder, VisionReport Report) Train(DemoRecipe recipe, VisionProbes parts, string runDir, TextWriter log)
    {
        parts.encoder.Unfreeze();
        parts.train();
        var random = new Random(recipe.Seed + 12);
        var heldOut = Enumerable.Range(0, 500).Select(_ => ShapeScene.Random(random, DemoImages.CanvasSize)).ToArray();
        var config = DemoPretraining.Config(recipe, recipe.VisionSteps, recipe.VisionLearningRate, recipe.Seed + 12, runDir);
        float loss = DemoPretraining.Train(config, parts, recipe.VisionSteps,
            _ => Enumerable.Range(0, recipe.VisionBatch).Select(_ => ShapeScene.Random(random, DemoImages.CanvasSize)).ToArray(),
            scenes =>
            {
                var (kind, colour, count) = parts.Heads(DemoImages.ToPixels(scenes, recipe.ImageSize));
                var t = VisionProbes.Targets(scenes);
                return nn.functional.cross_entropy(kind, t[.., 0]).add(nn.functional.cross_entropy(colour, t[.., 1]), TorchScalars.One)
                    .add(nn.functional.cross_entropy(count, t[.., 2]), TorchScalars.One);
            }, "vision", log);

        parts.encoder.Freeze();
        VisionReport report;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var (kind, colour, count) = parts.Heads(DemoImages.ToPixels(heldOut, recipe.ImageSize));
            var t = VisionProbes.Targets(heldOut);
            double Accuracy(Tensor logits, int column) => logits.argmax(1).eq(t[.., column]).to(ScalarType.Float32).mean().item<float>();
            report = new VisionReport(Accuracy(kind, 0), Accuracy(colour, 1), Accuracy(count, 2), loss);
        }
        parts.kind.Dispose(); parts.colour.Dispose(); parts.count.Dispose();
        log.WriteLine($"  vision probes on held-out images: kind {report.KindAccuracy:P1}, colour {report.ColourAccuracy:P1}, count {report.CountAccuracy:P1}");
        return (parts.encoder, report);
    }
}
