using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Text;
using static TorchSharp.torch;
using VisualChat.Conversations;

namespace VisualChat.Demo;

/// <summary>
/// The minimal VisualChat forward the demo needs (stand-in for the project's VisualChatModel): token embeddings with
/// each &lt;image&gt; placeholder replaced by that image's embedding (one LM token per image), the modality map, and
/// the LLaMA decoder under <see cref="VisualChat.Attention.MmcaAttentionKernel"/>.
/// </summary>
public static class DemoChatForward
{
    /// <param name="imageEmbeddings">[images in batch order, hidden]: one embedding per placeholder.</param>
    /// <returns>Logits [B, L, vocab].</returns>
    public static Tensor Logits(LlamaForCausalLM lm, DemoBatch batch, Tensor imageEmbeddings)
    {
        using var scope = NewDisposeScope();
        long b = batch.InputIds.shape[0], l = batch.InputIds.shape[1], hidden = lm.Config.HiddenSize;
        if (imageEmbeddings.shape[0] != batch.ImageSlots.shape[0])
            throw new ArgumentException($"{imageEmbeddings.shape[0]} image embeddings for {batch.ImageSlots.shape[0]} <image> placeholders.", nameof(imageEmbeddings));
        var embeddings = lm.Embed(batch.InputIds).reshape(b * l, hidden);
        if (batch.ImageSlots.shape[0] > 0)
            embeddings = embeddings.index_copy(0, batch.ImageSlots, imageEmbeddings);
        var output = lm.Forward(new CausalLMInput(InputsEmbeds: embeddings.reshape(b, l, hidden), TokenModality: batch.Modality));
        return output.Logits.MoveToOuterDisposeScope();
    }

    /// <summary>Next-token cross entropy on answer tokens (labels ≠ -100).</summary>
    public static Tensor Loss(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        long vocab = logits.shape[2];
        var predicted = logits.narrow(1, 0, logits.shape[1] - 1).reshape(-1, vocab);
        var target = labels.narrow(1, 1, labels.shape[1] - 1).reshape(-1);
        return nn.functional.cross_entropy(predicted, target, ignore_index: ConversationTemplate.IgnoreLabel).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Per-round exact match under greedy decoding with the true history. Greedy decoding reproduces an answer exactly
    /// iff, with the true answer as prefix, the argmax at every answer position (answer tokens and the closing EOS) is
    /// the true next token — so one teacher-forced forward scores every round of a conversation at once.
    /// </summary>
    public static void Score(Tensor logits, DemoBatch batch, DemoScores scores)
    {
        using var scope = NewDisposeScope();
        var predicted = logits.argmax(2).to(ScalarType.Int64);
        var predictedIds = predicted.data<long>().ToArray();
        long l = logits.shape[1];
        for (int b = 0; b < batch.Samples.Length; b++)
        {
            var sample = batch.Samples[b];
            foreach (var (start, end, kind) in sample.Answers)
            {
                bool correct = true;
                for (int t = start; t < end && correct; t++)
                    correct = predictedIds[b * l + t - 1] == sample.Labels[t];
                scores.Add(kind, correct);
            }
        }
    }

    /// <summary>
    /// Stage-2 image embeddings, <paramref name="imageTokens"/> per scene in placeholder order. One token: the sum of the
    /// description words' embeddings ("3" + "red" + "circle"), so the slot carries exactly what a caption would. Four
    /// tokens: the &lt;image&gt; marker, then count, colour and kind each in its own slot, so reading an attribute is a
    /// copy by attention rather than the untangling of a sum.
    /// </summary>
    public static Tensor DescriptionEmbeddings(LlamaForCausalLM lm, IReadOnlyList<ShapeScene> scenes, DescriptionVocabulary words, int imageTokens = 1)
    {
        using var scope = NewDisposeScope();
        var words3 = scenes.SelectMany(s => new long[] { words.Count[s.Count - 1], words.Colour[(int)s.Color], words.Kind[(int)s.Kind] }).ToArray();
        switch (imageTokens)
        {
            case 1:
                return lm.Embed(tensor(words3, [scenes.Count, 3])).sum(1).MoveToOuterDisposeScope();
            case 4:
                var ids = new long[scenes.Count * 4];
                for (int i = 0; i < scenes.Count; i++)
                {
                    ids[i * 4] = words.ImageMarker;
                    Array.Copy(words3, i * 3, ids, i * 4 + 1, 3);
                }
                return lm.Embed(tensor(ids)).MoveToOuterDisposeScope();
            default:
                throw new ArgumentOutOfRangeException(nameof(imageTokens), imageTokens, "The demo describes an image with 1 or 4 tokens (perceiver grid 1 or 2).");
        }
    }
}

/// <summary>Token ids of the description words, by count − 1, colour and kind.</summary>
public sealed record DescriptionVocabulary(long[] Count, long[] Colour, long[] Kind, long ImageMarker)
{
    /// <param name="answerTokens">Describe with the tokens the answers are written in ("red" at the start of an answer
    /// line, no "▁") where the tokenizer has such a single piece, so that reading an attribute out of an image slot and
    /// writing it as the answer are the same token (the LM's head is tied to its embeddings). Otherwise, and for words
    /// without such a piece, the "▁word" pieces.</param>
    public static DescriptionVocabulary From(SentencePieceTokenizer tokenizer, bool answerTokens = false)
    {
        long Id(string word) => (answerTokens ? tokenizer.TokenToId(word) : null) ?? DemoTokenizer.WordId(tokenizer, word);
        return new(
            Enumerable.Range(1, 4).Select(i => Id(i.ToString())).ToArray(),
            Enum.GetValues<ShapeColor>().Select(c => Id(ShapeScene.Name(c))).ToArray(),
            Enum.GetValues<ShapeKind>().Select(k => Id(ShapeScene.Name(k))).ToArray(),
            ConversationTemplate.ImageTokenId(tokenizer));
    }
}

/// <summary>Exact-match counts per question kind.</summary>
public sealed class DemoScores
{
    readonly Dictionary<ShapesQuestion, (int Correct, int Total)> _counts = new();

    public void Add(ShapesQuestion kind, bool correct)
    {
        var (c, t) = _counts.GetValueOrDefault(kind);
        _counts[kind] = (c + (correct ? 1 : 0), t + 1);
    }

    public IReadOnlyDictionary<ShapesQuestion, double> PerKind =>
        _counts.OrderBy(kv => kv.Key).ToDictionary(kv => kv.Key, kv => (double)kv.Value.Correct / kv.Value.Total);

    public IReadOnlyDictionary<ShapesQuestion, int> Totals => _counts.OrderBy(kv => kv.Key).ToDictionary(kv => kv.Key, kv => kv.Value.Total);

    public double Overall => _counts.Values.Sum(v => v.Total) == 0 ? 0 : (double)_counts.Values.Sum(v => v.Correct) / _counts.Values.Sum(v => v.Total);

    public override string ToString() =>
        $"overall {Overall:P1} ({_counts.Values.Sum(v => v.Total)} rounds); " + string.Join(", ", PerKind.Select(kv => $"{kv.Key} {kv.Value:P1} (n={Totals[kv.Key]})"));
}
