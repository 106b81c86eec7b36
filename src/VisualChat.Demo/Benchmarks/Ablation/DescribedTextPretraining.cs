using VisualChat.Conversations;
using VisualChat.Data.Synthetic;
using VisualChat.Demo;
using VisualChat.Model;
using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks.Ablation;

/// <summary>
/// The ablation's language-model pretraining, the analogue of a LLaMA that never saw an image: the tiny LM trained
/// (through the project's trainer and loss, like the demo's) with plain causal
/// attention on shapes conversations in the DSVC template where every &lt;image&gt; is replaced by its description as
/// ordinary text ("3 red circle"), loss on the answers. Unlike the demo's LM pretraining it never reads an image slot
/// or a modality map, so it favours none of the attention modes compared afterwards.
/// </summary>
public static class DescribedTextPretraining
{
    /// <summary>The sample's ids and labels with each image's slots replaced by its scene's description (no loss on
    /// it): with one slot per image the count, colour and kind words; with four (<paramref name="imageTokens"/>, the
    /// sample encoded with four slots per image) <see cref="DescriptionVocabulary.ImageMarker"/> and then those words,
    /// so the text has as many positions per image as the projection will fill.</summary>
    public static (int[] Ids, int[] Labels) Describe(DemoSample sample, DescriptionVocabulary words, int imageTokens = 1)
    {
        var ids = new List<int>(sample.InputIds.Length + 3 * sample.Scenes.Length);
        var labels = new List<int>(ids.Capacity);
        int slot = 0;
        for (int t = 0; t < sample.InputIds.Length; t++)
        {
            if (slot < sample.ImagePositions.Length && sample.ImagePositions[slot] == t)
            {
                if (slot++ % imageTokens != 0) continue;
                var scene = sample.Scenes[(slot - 1) / imageTokens];
                if (imageTokens == 4)
                {
                    ids.Add((int)words.ImageMarker);
                    labels.Add(ConversationTemplate.IgnoreLabel);
                }
                else if (imageTokens != 1)
                {
                    throw new ArgumentOutOfRangeException(nameof(imageTokens), imageTokens, "Images are described with 1 or 4 slots.");
                }

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
    /// <param name="runDir">The trainer's output folder (metrics.jsonl).</param>
    public static float Train(DemoRecipe recipe, LlamaForCausalLM lm, SentencePieceTokenizer tokenizer, ConversationTemplate template, string runDir, TextWriter log)
    {
        lm.AttentionKernel = VisualChat.Attention.CausalAttentionKernel.Instance;
        // The LM's vocabulary has no <image>: BOS (no other role inside a conversation) marks where an image starts.
        var words = DescriptionVocabulary.From(tokenizer, recipe.DescribeWithAnswerTokens) with { ImageMarker = tokenizer.BosId };
        return LanguagePretraining.TrainOnFreshConversations(recipe, lm, tokenizer, template, $"seed {recipe.Seed / 1000} lm", runDir, log, samples =>
        {
            var (ids, labels) = Collate(samples.Select(sample => Describe(sample, words, recipe.ImageTokens)).ToArray());
            return lm.Loss(new CausalLMInput(InputIds: ids), labels).Loss;
        });
    }

    /// <summary>Right-padded ids (0) and labels (ignored) [B, L]; causal attention never lets a token see the padding after it.</summary>
    static (Tensor Ids, Tensor Labels) Collate(IReadOnlyList<(int[] Ids, int[] Labels)> samples)
    {
        int batch = samples.Count, length = samples.Max(s => s.Ids.Length);
        var ids = new long[batch * length];
        var labels = new long[batch * length];
        Array.Fill(labels, ConversationTemplate.IgnoreLabel);
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < samples[b].Ids.Length; t++)
            {
                ids[b * length + t] = samples[b].Ids[t];
                labels[b * length + t] = samples[b].Labels[t];
            }
        }

        return (tensor(ids, [batch, length]), tensor(labels, [batch, length]));
    }
}
