using System.Diagnostics;
using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Data.Synthetic;
using VisualChat.Vision;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>Vision accuracy of the pretrained encoder's probe heads on held-out images.</summary>
public sealed record VisionReport(double KindAccuracy, double ColourAccuracy, double CountAccuracy, float FinalLoss);

/// <summary>
/// Stage 1: trains the tiny CLIP encoder from scratch to expose shape kind, colour and count — three linear probes on
/// the mean of its output tokens — then freezes it. The probes are discarded; only the encoder goes on.
/// </summary>
public static class VisionPretraining
{
    public static ClipVisionConfig Config(DemoRecipe recipe) => new()
    {
        HiddenSize = recipe.VisionWidth, IntermediateSize = recipe.VisionWidth * 2, ProjectionDim = recipe.VisionWidth,
        NumHiddenLayers = recipe.VisionLayers, NumAttentionHeads = recipe.VisionHeads,
        ImageSize = recipe.ImageSize, PatchSize = recipe.PatchSize, HiddenAct = "quick_gelu", LayerNormEps = 1e-5,
    };

    /// <summary>The encoder and its three probe heads, initialised from the recipe's seed. Separate from
    /// <see cref="Train"/> because initialisation draws from libtorch's global generator, which must not be shared
    /// with a stage that trains at the same time.</summary>
    public sealed record Untrained(ClipVisionModel Encoder, Linear KindHead, Linear ColourHead, Linear CountHead);

    public static Untrained Create(DemoRecipe recipe)
    {
        manual_seed(recipe.Seed + 11);
        var encoder = new ClipVisionModel(Config(recipe));
        int width = recipe.VisionWidth;
        return new Untrained(encoder, nn.Linear(width, Enum.GetValues<ShapeKind>().Length),
            nn.Linear(width, Enum.GetValues<ShapeColor>().Length), nn.Linear(width, 4));
    }

    public static (ClipVisionModel Encoder, VisionReport Report) Run(DemoRecipe recipe, TextWriter log) => Train(recipe, Create(recipe), log);

    /// <summary>Trains on freshly drawn scenes every step (pictures are free to generate, so the encoder never sees one
    /// twice and cannot memorise), then freezes the encoder and reports probe accuracy on 500 held-out scenes.</summary>
    public static (ClipVisionModel Encoder, VisionReport Report) Train(DemoRecipe recipe, Untrained parts, TextWriter log)
    {
        var (encoder, kindHead, colourHead, countHead) = parts;
        encoder.Unfreeze();
        encoder.train();
        var random = new Random(recipe.Seed + 12);
        var heldOut = Enumerable.Range(0, 500).Select(_ => ShapeScene.Random(random, DemoImages.CanvasSize)).ToArray();

        var parameters = encoder.parameters().Concat(kindHead.parameters()).Concat(colourHead.parameters()).Concat(countHead.parameters());
        using var optimization = new DemoOptimization(parameters, recipe.VisionLearningRate, recipe.VisionSteps, recipe.WarmupSteps,
            weightDecay: recipe.WeightDecay);
        float loss = float.NaN;
        var clock = Stopwatch.StartNew();
        for (int step = 0; step < recipe.VisionSteps; step++)
        {
            using var scope = NewDisposeScope();
            var scenes = Enumerable.Range(0, recipe.VisionBatch).Select(_ => ShapeScene.Random(random, DemoImages.CanvasSize)).ToArray();
            var (kind, colour, count) = Heads(encoder, kindHead, colourHead, countHead, DemoImages.ToPixels(scenes, recipe.ImageSize));
            var t = Targets(scenes);
            var total = nn.functional.cross_entropy(kind, t[.., 0]).add(nn.functional.cross_entropy(colour, t[.., 1]), TorchScalars.One)
                        .add(nn.functional.cross_entropy(count, t[.., 2]), TorchScalars.One);
            loss = optimization.Step(step, total);
            if (step % 500 == 0 || step == recipe.VisionSteps - 1)
                log.WriteLine($"  vision step {step,4}: loss {loss:F4} ({clock.Elapsed.TotalSeconds:F0} s)");
        }

        encoder.Freeze();
        VisionReport report;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var (kind, colour, count) = Heads(encoder, kindHead, colourHead, countHead, DemoImages.ToPixels(heldOut, recipe.ImageSize));
            var t = Targets(heldOut);
            double Accuracy(Tensor logits, int column) => logits.argmax(1).eq(t[.., column]).to(ScalarType.Float32).mean().item<float>();
            report = new VisionReport(Accuracy(kind, 0), Accuracy(colour, 1), Accuracy(count, 2), loss);
        }
        kindHead.Dispose(); colourHead.Dispose(); countHead.Dispose();
        log.WriteLine($"  vision probes on held-out images: kind {report.KindAccuracy:P1}, colour {report.ColourAccuracy:P1}, count {report.CountAccuracy:P1}");
        return (encoder, report);
    }

    static (Tensor Kind, Tensor Colour, Tensor Count) Heads(ClipVisionModel encoder, Linear kind, Linear colour, Linear count, Tensor pixels)
    {
        var pooled = encoder.forward(pixels).mean([1]);
        return (kind.forward(pooled), colour.forward(pooled), count.forward(pooled));
    }

    static Tensor Targets(IReadOnlyList<ShapeScene> scenes) =>
        tensor(scenes.SelectMany(s => new long[] { (long)s.Kind, (long)s.Color, s.Count - 1 }).ToArray(), [scenes.Count, 3]);
}
