using System.Text.Json;
using System.Text.Json.Nodes;

namespace VisualChat.Data.Synthetic;

/// <summary>Question kinds of the synthetic benchmark; accuracy is reported per kind.</summary>
public enum ShapesQuestion { Colour, Shape, Count, MostShapes, SameShape, ImagesShown }

public sealed record ShapesRound(IReadOnlyList<ShapeScene> NewImages, string Question, string Answer, ShapesQuestion Kind);

public sealed record ShapesConversation(string Id, IReadOnlyList<ShapesRound> Rounds)
{
    public IEnumerable<ShapeScene> Images => Rounds.SelectMany(r => r.NewImages);
}

/// <summary>
/// Procedural multi-image, multi-round conversations about pictures of coloured shapes. Images arrive in different
/// rounds and every question needs the right image (by ordinal), several images, or the conversation itself, with a
/// one-word canonical answer so exact-match accuracy is meaningful. Conversation <c>i</c> of seed <c>s</c> is the same
/// whatever else is generated, so any slice can be regenerated in parallel.
/// </summary>
public sealed class ShapesConversationGenerator
{
    public int Seed { get; }
    public int MaxRounds { get; init; } = 5;
    public int MaxImages { get; init; } = 4;
    public int MaxShapesPerImage { get; init; } = 4;

    public ShapesConversationGenerator(int seed) => Seed = seed;

    public ShapesConversation Generate(int index)
    {
        // HashCode is randomised per process; StableRandom's hash makes conversation i of seed s the same in every run.
        var random = new Random((int)(StableRandom.Hash(Seed, "shapes", index) & 0x7fffffff));
        int rounds = random.Next(1, MaxRounds + 1);
        var shown = new List<ShapeScene>();
        var result = new List<ShapesRound>();
        for (int round = 0; round < rounds; round++)
        {
            var newImages = new List<ShapeScene>();
            int room = MaxImages - shown.Count;
            int arriving = round == 0 ? random.Next(1, Math.Min(2, room) + 1) : random.Next(0, Math.Min(2, room) + 1);
            for (int i = 0; i < arriving; i++)
                newImages.Add(ShapeScene.Random(random, 64, MaxShapesPerImage));
            shown.AddRange(newImages);
            var (question, answer, kind) = Ask(random, shown, newImages.Count);
            result.Add(new ShapesRound(newImages, question, answer, kind));
        }
        return new ShapesConversation($"shapes-{Seed}-{index}", result);
    }

    static (string Question, string Answer, ShapesQuestion Kind) Ask(Random random, List<ShapeScene> shown, int justArrived)
    {
        var kinds = new List<ShapesQuestion> { ShapesQuestion.Colour, ShapesQuestion.Shape, ShapesQuestion.Count, ShapesQuestion.ImagesShown };
        if (shown.Count >= 2)
        {
            kinds.Add(ShapesQuestion.SameShape);
            int most = shown.Max(s => s.Count);
            if (shown.Count(s => s.Count == most) == 1) kinds.Add(ShapesQuestion.MostShapes);
        }
        var kind = kinds[random.Next(kinds.Count)];
        // Half of the single-image questions are about a picture that just arrived, the rest about any earlier one.
        int Pick() => justArrived > 0 && random.Next(2) == 0 ? shown.Count - 1 - random.Next(justArrived) : random.Next(shown.Count);
        switch (kind)
        {
            case ShapesQuestion.Colour:
            {
                int k = Pick();
                return ($"What colour is the shape in image {k + 1}?", ShapeScene.Name(shown[k].Color), kind);
            }
            case ShapesQuestion.Shape:
            {
                int k = Pick();
                return ($"What shape is in image {k + 1}?", ShapeScene.Name(shown[k].Kind), kind);
            }
            case ShapesQuestion.Count:
            {
                int k = Pick();
                return ($"How many shapes are in image {k + 1}?", shown[k].Count.ToString(), kind);
            }
            case ShapesQuestion.MostShapes:
            {
                int best = Enumerable.Range(0, shown.Count).MaxBy(i => shown[i].Count);
                return ("Which image has the most shapes?", $"image {best + 1}", kind);
            }
            case ShapesQuestion.SameShape:
            {
                int a = random.Next(shown.Count), b = random.Next(shown.Count - 1);
                if (b >= a) b++;
                (a, b) = (Math.Min(a, b), Math.Max(a, b));
                return ($"Do image {a + 1} and image {b + 1} show the same shape?", shown[a].Kind == shown[b].Kind ? "yes" : "no", kind);
            }
            default:
                return ("How many images have I shown you?", shown.Count.ToString(), kind);
        }
    }

    /// <summary>
    /// Writes conversations <paramref name="first"/>..first+count-1 as the project's generic JSONL format
    /// (<c>docs/data-formats.md</c>) with one PNG per image under <c>images/</c>, paths relative to the JSONL file.
    /// Images are <paramref name="imageSize"/> px, drawn at <paramref name="supersample"/> times that and box-filtered
    /// down (see <see cref="ShapeScene.Render(int, int)"/>).
    /// </summary>
    public string WriteJsonl(string folder, string fileName, int first, int count, int imageSize = 64, int supersample = 1)
    {
        Directory.CreateDirectory(Path.Combine(folder, "images"));
        var path = Path.Combine(folder, fileName);
        var temp = path + ".tmp";
        using (var writer = new StreamWriter(temp))
        {
            for (int index = first; index < first + count; index++)
            {
                var conversation = Generate(index);
                var rounds = new JsonArray();
                int imageNumber = 0;
                foreach (var round in conversation.Rounds)
                {
                    var images = new JsonArray();
                    foreach (var scene in round.NewImages)
                    {
                        var relative = $"images/{conversation.Id}-{++imageNumber}.png";
                        File.WriteAllBytes(Path.Combine(folder, relative), PngEncoder.EncodeRgb(scene.Render(imageSize, supersample), imageSize, imageSize));
                        images.Add(relative);
                    }
                    rounds.Add(new JsonObject
                    {
                        ["images"] = images,
                        ["question"] = round.Question,
                        ["answer"] = round.Answer,
                        ["type"] = round.Kind.ToString(),
                    });
                }
                writer.WriteLine(new JsonObject { ["id"] = conversation.Id, ["rounds"] = rounds }.ToJsonString());
            }
        }
        File.Move(temp, path, overwrite: true);
        return path;
    }
}
