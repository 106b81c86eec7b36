using System.Diagnostics;
using VisualChat.Data.Synthetic;
using VisualChat.Demo;
using VisualChat.Model;
using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks.Ablation;

/// <summary>
/// The ablation's stand-in for a pretrained LLaMA that never saw an image: the tiny LM trained with plain causal
/// attention on shapes conversations in the DSVC template where every &lt;image&gt; is replaced by its description as
/// ordinary text ("3 red circle"), loss on the answers. Unlike the demo's LM pretraining it never reads an image slot
/// or a modality map, so it favours none of the attention modes compared afterwards.
/// </summary>
public static class DescribedTextPretraining
{
    /// <summary>The sample's ids and labels with each &lt;image&gt; id replaced by its scene's count, colour and kind
    /// word ids (no loss on them).</summary>
    public static (int[] Ids, int[] Labels) Describe(DemoSample sample, DescriptionVocabulary words)
    {
        var ids = new List<int>(sample.InputIds.Length + 2 * sample.Scenes.Length);
        var labels = new List<int>(ids.Capacity);
        int image = 0;
        for (int t = 0; t < sample.InputIds.Length; t++)
        {
            if (image < sample.ImagePositions.Length && sample.ImagePositions[image] == t)
            {
                var scene = sample.Scenes[image++];
                ids.AddRange([(int)words.Count[scene.Count - 1], (int)words.Colour[(int)scene.Color], (int)words.Kind[(int)scene.Kind]]);
                labels.AddRange([ConversationTemplate.IgnoreLabel, ConversationTemplate.IgnoreLabel, ConversationTemplate.IgnoreLabel]);
            }
            else
            {
                ids.Add(sample.InputIds[t]);
                labels.Add(sample.Labels[t]);
            }
        }
        return (ids.ToArray(), labels.ToArray());
    }

    /// <summary>Trains <paramref name="lm"/> (vocabulary without &lt;image&gt;) on fresh described conversations every
    /// step, then freezes it; returns the last training loss.</summary>
    public static float Train(DemoRecipe recipe, LlamaForCausalLM lm, SentencePieceTokenizer tokenizer, ConversationTemplate template, TextWriter log)
    {
        lm.AttentionKernel = VisualChat.Attention.CausalAttentionKernel.Instance;
        lm.train();
        var words = DescriptionVocabulary.From(tokenizer);
        var generator = new ShapesConversationGenerator(recipe.Seed + 22);
        using var optimization = new DemoOptimization(lm.parameters(), recipe.LmLearningRate, recipe.LmSteps, recipe.WarmupSteps,
            weightDecay: recipe.WeightDecay);
        float loss = float.NaN;
        var clock = Stopwatch.StartNew();
        for (int step = 0; step < recipe.LmSteps; step++)
        {
            // Text is free to generate: the LM never sees a conversation twice.
            var described = Enumerable.Range(step * recipe.LmBatch, recipe.LmBatch)
                .Select(i => Describe(DemoSamples.Encode(generator.Generate(i), template, tokenizer), words)).ToArray();
            using var scope = NewDisposeScope();
            var (ids, labels) = Collate(described);
            var logits = lm.Forward(new CausalLMInput(InputIds: ids)).Logits;
            loss = optimization.Step(step, DemoChatForward.Loss(logits, labels));
            if (step % 250 == 0 || step == recipe.LmSteps - 1)
                log.WriteLine($"  seed {recipe.Seed / 1000} lm step {step,4}: loss {loss:F4} ({clock.Elapsed.TotalSeconds:F0} s)");
        }
        foreach (var p in lm.parameters()) p.requires_grad = false;
        lm.eval();
        return loss;
    }

    /// <summary>Right-padded ids (0) and labels (ignored) [B, L]; causal attention never lets a token see the padding after it.</summary>
    static (Tensor Ids, Tensor Labels) Collate(IReadOnlyList<(int[] Ids, int[] Labels)> samples)
    {
        int batch = samples.Count, length = samples.Max(s => s.Ids.Length);
        var ids = new long[batch * length];
        var labels = new long[batch * length];
        Array.Fill(labels, ConversationTemplate.IgnoreLabel);
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < samples[b].Ids.Length; t++)
            {
                ids[b * length + t] = samples[b].Ids[t];
                labels[b * length + t] = samples[b].Labels[t];
            }
        return (tensor(ids, [batch, length]), tensor(labels, [batch, length]));
    }
}
