using VisualChat.Attention;
using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Data.Synthetic;
using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>An image reference that carries its generated scene, so the template can place it without a file.</summary>
public sealed record SceneImageRef(ShapeScene Scene, string Name) : ImageRef
{
    public override string Describe() => Name;
}

/// <summary>One tokenized shapes conversation: the template's ids/labels, the placeholder positions with their scenes,
/// and each round's answer span (label positions) with its question kind.</summary>
public sealed record DemoSample(
    int[] InputIds,
    int[] Labels,
    int[] ImagePositions,
    ShapeScene[] Scenes,
    (int Start, int End, ShapesQuestion Kind)[] Answers);

/// <summary>A padded batch: ids, labels, modality [B, L] and the flat (b·L + position) index of every image slot.</summary>
public sealed record DemoBatch(Tensor InputIds, Tensor Labels, Tensor Modality, Tensor ImageSlots, ShapeScene[] Scenes, DemoSample[] Samples) : IDisposable
{
    public void Dispose()
    {
        InputIds.Dispose(); Labels.Dispose(); Modality.Dispose(); ImageSlots.Dispose();
    }
}

public static class DemoSamples
{
    public static Conversation ToConversation(ShapesConversation shapes)
    {
        int image = 0;
        var rounds = shapes.Rounds.Select(r => new Round(
            r.NewImages.Select(s => (ImageRef)new SceneImageRef(s, $"{shapes.Id}#{++image}")).ToArray(),
            r.Question, r.Answer, r.Kind.ToString())).ToArray();
        return new Conversation("shapes", rounds, [new SourceId("shapes", shapes.Id)]);
    }

    /// <param name="imageTokens">LM positions per image: each &lt;image&gt; placeholder becomes this many image slots.</param>
    public static DemoSample Encode(ShapesConversation shapes, ConversationTemplate template, ITokenizer tokenizer, int imageTokens = 1)
    {
        var conversation = ToConversation(shapes);
        var rounds = template.TokenizeRounds(conversation, tokenizer);
        int imageId = ConversationTemplate.ImageTokenId(tokenizer);
        var ids = new List<int>();
        var labels = new List<int>();
        var answers = new List<(int, int, ShapesQuestion)>();
        foreach (var round in rounds)
        {
            int offset = ids.Count;
            for (int t = 0; t < round.InputIds.Length; t++)
            {
                int copies = round.InputIds[t] == imageId ? imageTokens : 1;
                for (int c = 0; c < copies; c++)
                {
                    ids.Add(round.InputIds[t]);
                    labels.Add(round.Labels[t]);
                }
            }
            int start = labels.FindIndex(offset, l => l != ConversationTemplate.IgnoreLabel);
            if (start < 0) throw new InvalidDataException($"Round {round.RoundIndex + 1} of {shapes.Id} has no answer tokens.");
            answers.Add((start, ids.Count, shapes.Rounds[round.RoundIndex].Kind));
        }
        var positions = Enumerable.Range(0, ids.Count).Where(i => ids[i] == imageId).ToArray();
        var scenes = shapes.Images.ToArray();
        if (positions.Length != scenes.Length * imageTokens)
            throw new InvalidDataException($"{shapes.Id}: {scenes.Length} images but {positions.Length / imageTokens} '<image>' placeholders.");
        return new DemoSample(ids.ToArray(), labels.ToArray(), positions, scenes, answers.ToArray());
    }

    /// <summary>Right-pads to the longest sample; padding has modality <see cref="TokenModality.Padding"/> and no loss.</summary>
    public static DemoBatch Collate(IReadOnlyList<DemoSample> samples)
    {
        int batch = samples.Count, length = samples.Max(s => s.InputIds.Length);
        var ids = new long[batch * length];
        var labels = new long[batch * length];
        var modality = new long[batch * length];
        Array.Fill(labels, ConversationTemplate.IgnoreLabel);
        var slots = new List<long>();
        var scenes = new List<ShapeScene>();
        for (int b = 0; b < batch; b++)
        {
            var s = samples[b];
            for (int t = 0; t < s.InputIds.Length; t++)
            {
                ids[b * length + t] = s.InputIds[t];
                labels[b * length + t] = s.Labels[t];
                modality[b * length + t] = (long)TokenModality.Text;
            }
            foreach (var p in s.ImagePositions)
            {
                modality[b * length + p] = (long)TokenModality.Image;
                slots.Add(b * length + p);
            }
            scenes.AddRange(s.Scenes);
        }
        return new DemoBatch(
            tensor(ids, [batch, length]), tensor(labels, [batch, length]), tensor(modality, [batch, length]),
            tensor(slots.ToArray()), scenes.ToArray(), samples.ToArray());
    }
}
