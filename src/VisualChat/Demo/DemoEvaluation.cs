using VisualChat.Data;
using VisualChat.Data.Synthetic;
using VisualChat.Inference;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>Held-out exact match of a VisualChat model, per question kind.</summary>
public static class DemoEvaluation
{
    /// <summary>
    /// Greedy-decodes the answer of every round of <paramref name="conversations"/> with <paramref name="model"/>'s
    /// conversation API and scores it correct when the generated ids equal the reference answer's ids and its EOS. Each
    /// round is asked after the true history (earlier rounds' reference answers, every image shown so far), so a wrong
    /// answer does not carry into later rounds. Rounds of different conversations are decoded together,
    /// <paramref name="batchSize"/> at a time. Images are read and preprocessed as the model folder says
    /// (<see cref="VisualChatModel.ImageProcessor"/>); the round's <see cref="Round.Category"/> is its question kind.
    /// </summary>
    public static DemoScores ExactMatch(VisualChatModel model, IReadOnlyList<Conversation> conversations, int batchSize = 32)
    {
        var tokenizer = model.Tokenizer ?? throw new InvalidOperationException("The model has no tokenizer; evaluation needs the model folder's lm/ tokenizer.");
        var template = new ConversationTemplate(model.Config.TemplateOptions);
        var processor = new ClipImageProcessor(model.ImageProcessor ?? ImageProcessorConfig.Clip224);
        var rounds = new List<(int[] Prompt, int[] Answer, ImageRef[] Images, ShapesQuestion Kind)>();
        foreach (var conversation in conversations)
        {
            var history = new List<int>();
            var images = new List<ImageRef>();
            var tokenized = template.TokenizeRounds(conversation, tokenizer);
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

        var pixels = new Dictionary<ImageRef, Tensor>();
        Tensor Pixels(ImageRef image)
        {
            if (!pixels.TryGetValue(image, out var p))
                pixels[image] = p = processor.Preprocess(ImageLoader.Load(ImageRefs.ReadBytes(image), image.Describe())).unsqueeze(0).DetachFromDisposeScope();
            return p;
        }
        var scores = new DemoScores();
        using var noGrad = no_grad();
        try
        {
            foreach (var chunk in rounds.Chunk(batchSize))
            {
                using var scope = NewDisposeScope();
                var state = model.CreateConversation(chunk.Length,
                    capacity: chunk.Max(r => r.Prompt.Length + r.Images.Length * (model.ImageTokens - 1) + r.Answer.Length + 1));
                model.Append(state, chunk.Select(r => (IReadOnlyList<int>)r.Prompt).ToArray(),
                    chunk.Select(r => r.Images.Length == 0 ? null : cat(r.Images.Select(Pixels).ToArray(), 0)).ToArray());
                var answers = model.Generate(state, new GenerationOptions { MaxNewTokens = chunk.Max(r => r.Answer.Length) });
                for (int i = 0; i < chunk.Length; i++) scores.Add(chunk[i].Kind, answers[i].TokenIds.SequenceEqual(chunk[i].Answer));
            }
        }
        finally
        {
            foreach (var p in pixels.Values) p.Dispose();
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
