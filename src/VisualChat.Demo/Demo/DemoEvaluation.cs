using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Data.Synthetic;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>Held-out exact match of a VisualChat model, per question kind.</summary>
public static class DemoEvaluation
{
    /// <summary>
    /// Greedy-decodes the answer of every round of <paramref name="conversations"/> through the product's inference
    /// path — the model folder's <see cref="VisualChatProcessor"/> (template, tokenizer, image preprocessing) and the
    /// <see cref="GenerationEngine"/> — and scores it correct when the generated ids equal the reference answer's ids and
    /// its EOS. Each round is asked after the true history (earlier rounds' reference answers, every image shown so
    /// far), so a wrong answer does not carry into later rounds. <paramref name="batchSize"/> rounds decode together as
    /// sequences of one running batch. The round's <see cref="Round.Category"/> is its question kind.
    /// </summary>
    public static DemoScores ExactMatch(VisualChatModel model, IReadOnlyList<Conversation> conversations, int batchSize = 32)
    {
        var processor = VisualChatProcessor.From(model);
        var rounds = new List<(int[] Prompt, int[] Answer, ImageRef[] Images, ShapesQuestion Kind)>();
        foreach (var conversation in conversations)
        {
            var history = new List<int>();
            var images = new List<ImageRef>();
            var tokenized = processor.Template.TokenizeRounds(conversation, processor.Tokenizer);
            for (int r = 0; r < tokenized.Count; r++)
            {
                var round = tokenized[r];
                int start = Array.FindIndex(round.Labels, l => l != ConversationTemplate.IgnoreLabel);
                var category = conversation.Rounds[r].Category;
                if (start < 0 || !Enum.TryParse<ShapesQuestion>(category, out var kind))
                    throw new InvalidDataException($"{conversation.SourceIds.FirstOrDefault()} round {r + 1}: no answer, or a 'type' that is not a question kind ({category}).");
                images.AddRange(conversation.Rounds[r].NewImages);
                rounds.Add(([.. history, .. round.InputIds[..start]], round.InputIds[start..], images.ToArray(), kind));
                history.AddRange(round.InputIds);
            }
        }

        var decoded = new Dictionary<ImageRef, RgbImage>();
        RgbImage Image(ImageRef image)
        {
            if (!decoded.TryGetValue(image, out var rgb))
                decoded[image] = rgb = ImageLoader.Load(ImageRefs.ReadBytes(image), image.Describe());
            return rgb;
        }
        var engine = new GenerationEngine(model, processor.Tokenizer);
        var scores = new DemoScores();
        using var noGrad = no_grad();
        foreach (var chunk in rounds.Chunk(batchSize))
        {
            using var scope = NewDisposeScope();
            var states = chunk.Select(r => model.CreateConversation(capacity: r.Prompt.Length + r.Images.Length * (model.ImageTokens - 1) + r.Answer.Length + 1)).ToArray();
            try
            {
                var requests = chunk.Select((r, i) => new GenerationRequest(states[i],
                    new DecoderPrompt(r.Prompt, processor.Pixels(r.Images.Select(Image).ToArray())),
                    new GenerationOptions { MaxNewTokens = r.Answer.Length })).ToArray();
                var answers = engine.Generate(requests);
                for (int i = 0; i < chunk.Length; i++) scores.Add(chunk[i].Kind, answers[i].TokenIds.SequenceEqual(chunk[i].Answer));
            }
            finally
            {
                foreach (var state in states) state.Dispose();
            }
        }
        return scores;
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
