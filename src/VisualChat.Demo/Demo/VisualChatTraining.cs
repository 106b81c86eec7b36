using System.Diagnostics;
using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>
/// Stage 3, the DeepSpeed-VisualChat recipe: frozen vision encoder, frozen LM, multi-modal causal attention; only the
/// projection (DSVC's perceiver with a 1×1 query grid, i.e. one LM token per image) — and optionally the token
/// embeddings — are trained, from the LM loss on the answers.
/// </summary>
public static class VisualChatTraining
{
    public static IProjection CreateProjection(DemoRecipe recipe)
    {
        manual_seed(recipe.Seed + 31);
        return ProjectionFactory.Create(ProjectionKind.Perceiver, recipe.VisionWidth, recipe.LmHidden,
            new ProjectionOptions(PerceiverGridSize: GridSize(recipe), PerceiverHeads: recipe.LmHeads));
    }

    /// <summary>The perceiver's query grid: <see cref="DemoRecipe.ImageTokens"/> = grid².</summary>
    public static int GridSize(DemoRecipe recipe) => recipe.ImageTokens switch
    {
        1 => 1,
        4 => 2,
        _ => throw new ArgumentException($"DemoRecipe.ImageTokens is {recipe.ImageTokens}; the demo supports 1 or 4 tokens per image."),
    };

    /// <summary>Frozen-encoder features for every image, computed once: [images, tokens, width].</summary>
    public static Tensor EncodeImages(IVisionEncoder encoder, IReadOnlyList<ShapeScene> scenes, int imageSize)
    {
        using var scope = NewDisposeScope();
        var chunks = new List<Tensor>();
        for (int first = 0; first < scenes.Count; first += 256)
        {
            using var pixels = DemoImages.ToPixels(scenes.Skip(first).Take(256).ToArray(), imageSize);
            chunks.Add(encoder.Encode(pixels));
        }
        return cat(chunks, 0).MoveToOuterDisposeScope();
    }

    public static float Run(DemoRecipe recipe, LlamaForCausalLM lm, IProjection projection, IReadOnlyList<DemoSample> samples,
        Tensor features, int[] firstImage, TextWriter log)
    {
        var module = (nn.Module)projection;
        module.train();
        var parameters = module.parameters().ToList();
        if (recipe.ChatTrainTokenEmbeddings)
        {
            lm.model.embed_tokens.weight!.requires_grad = true;
            parameters.Add(lm.model.embed_tokens.weight!);
        }
        using var optimization = new DemoOptimization(parameters, recipe.ChatLearningRate, recipe.ChatSteps, recipe.WarmupSteps,
            recipe.ChatBeta1, recipe.ChatBeta2, recipe.WeightDecay);
        var order = new Random(recipe.Seed + 32);
        float loss = float.NaN;
        var clock = Stopwatch.StartNew();
        for (int step = 0; step < recipe.ChatSteps; step++)
        {
            var picked = Enumerable.Range(0, recipe.ChatBatch).Select(_ => order.Next(samples.Count)).ToArray();
            using var scope = NewDisposeScope();
            using var batch = DemoSamples.Collate(picked.Select(i => samples[i]).ToArray());
            var imageIndex = tensor(picked.SelectMany(i => Enumerable.Range(firstImage[i], samples[i].Scenes.Length)).Select(x => (long)x).ToArray());
            var imageEmbeddings = Project(projection, features.index_select(0, imageIndex));
            var logits = DemoChatForward.Logits(lm, batch, imageEmbeddings);
            loss = optimization.Step(step, DemoChatForward.Loss(logits, batch.Labels));
            if (step % 50 == 0 || step == recipe.ChatSteps - 1)
                log.WriteLine($"  chat step {step,4}: loss {loss:F4} ({clock.Elapsed.TotalSeconds:F0} s)");
        }
        lm.model.embed_tokens.weight!.requires_grad = false;
        module.eval();
        return loss;
    }

    /// <summary>Projected image tokens in placeholder order: [images · tokens per image, hidden].</summary>
    public static Tensor Project(IProjection projection, Tensor features) => projection.Project(features).flatten(0, 1);

    /// <summary>Index of each sample's first image in the concatenated image list.</summary>
    public static int[] FirstImageIndex(IReadOnlyList<DemoSample> samples)
    {
        var first = new int[samples.Count];
        for (int i = 1; i < samples.Count; i++) first[i] = first[i - 1] + samples[i - 1].Scenes.Length;
        return first;
    }
}
