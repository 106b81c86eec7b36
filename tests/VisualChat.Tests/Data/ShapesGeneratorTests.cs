using System.Text.Json;
using VisualChat.Data.Synthetic;

namespace VisualChat.Tests.Data;

public class ShapesGeneratorTests
{
    [Fact]
    public void SameSeedAndIndexGiveTheSameConversationWhateverTheOrder()
    {
        var generator = new ShapesConversationGenerator(3);
        var forward = Enumerable.Range(0, 50).Select(i => Describe(generator.Generate(i))).ToList();
        var parallel = new string[50];
        Parallel.For(0, 50, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => parallel[49 - i] = Describe(generator.Generate(49 - i)));
        Assert.Equal(forward, parallel);
        Assert.NotEqual(forward, Enumerable.Range(0, 50).Select(i => Describe(new ShapesConversationGenerator(4).Generate(i))).ToList());
    }

    [Fact]
    public void AnswersFollowFromTheImagesShownSoFar()
    {
        var generator = new ShapesConversationGenerator(1);
        var kinds = new HashSet<ShapesQuestion>();
        for (int i = 0; i < 300; i++)
        {
            var conversation = generator.Generate(i);
            Assert.InRange(conversation.Rounds.Count, 1, 5);
            Assert.NotEmpty(conversation.Rounds[0].NewImages);
            var shown = new List<ShapeScene>();
            foreach (var round in conversation.Rounds)
            {
                shown.AddRange(round.NewImages);
                kinds.Add(round.Kind);
                var numbers = System.Text.RegularExpressions.Regex.Matches(round.Question, @"image (\d+)").Select(m => int.Parse(m.Groups[1].Value)).ToList();
                Assert.All(numbers, n => Assert.InRange(n, 1, shown.Count));
                string expected = round.Kind switch
                {
                    ShapesQuestion.Colour => ShapeScene.Name(shown[numbers[0] - 1].Color),
                    ShapesQuestion.Shape => ShapeScene.Name(shown[numbers[0] - 1].Kind),
                    ShapesQuestion.Count => shown[numbers[0] - 1].Count.ToString(),
                    ShapesQuestion.SameShape => shown[numbers[0] - 1].Kind == shown[numbers[1] - 1].Kind ? "yes" : "no",
                    ShapesQuestion.MostShapes => $"image {shown.IndexOf(shown.MaxBy(s => s.Count)!) + 1}",
                    _ => shown.Count.ToString(),
                };
                Assert.Equal(expected, round.Answer);
            }
            Assert.InRange(shown.Count, 1, 4);
        }
        Assert.Equal(Enum.GetValues<ShapesQuestion>().Length, kinds.Count);
    }

    [Fact]
    public void WritesJsonlWithPngFilesRelativeToIt()
    {
        var folder = Directory.CreateTempSubdirectory("shapes").FullName;
        try
        {
            var path = new ShapesConversationGenerator(5).WriteJsonl(folder, "train.jsonl", 0, 10);
            var lines = File.ReadAllLines(path);
            Assert.Equal(10, lines.Length);
            foreach (var line in lines)
            {
                using var doc = JsonDocument.Parse(line);
                foreach (var round in doc.RootElement.GetProperty("rounds").EnumerateArray())
                {
                    foreach (var image in round.GetProperty("images").EnumerateArray())
                    {
                        var bytes = File.ReadAllBytes(Path.Combine(folder, image.GetString()!));
                        Assert.Equal(0x89, bytes[0]);
                        Assert.Equal((byte)'P', bytes[1]);
                    }
                }
            }
        }
        finally { Directory.Delete(folder, true); }
    }

    [Fact]
    public void RenderedPixelsShowTheShapeColour()
    {
        var scene = new ShapeScene(ShapeKind.Square, ShapeColor.Blue, [(16, 16, 10)]);
        var rgb = scene.Render(64);
        int centre = (16 * 64 + 16) * 3, corner = (60 * 64 + 60) * 3;
        Assert.Equal(new byte[] { 30, 60, 220 }, rgb[centre..(centre + 3)]);
        Assert.Equal(new byte[] { 255, 255, 255 }, rgb[corner..(corner + 3)]);
    }

    static string Describe(ShapesConversation c) => JsonSerializer.Serialize(c.Rounds.Select(r => new { r.Question, r.Answer, Images = r.NewImages.Select(i => $"{i.Kind}{i.Color}{string.Join(";", i.Instances)}") }));
}

public class ShapesThroughJsonlReaderTests
{
    [Fact]
    public void GeneratedFileReadsBackThroughTheGenericJsonlReaderWithCategories()
    {
        var folder = Directory.CreateTempSubdirectory("shapes-jsonl").FullName;
        try
        {
            var generator = new ShapesConversationGenerator(9);
            var path = generator.WriteJsonl(folder, "eval.jsonl", 0, 20);
            var config = Path.Combine(folder, "data.json");
            File.WriteAllText(config, "{\"root\": \".\", \"eval_fraction\": 0, \"datasets\": [{\"name\": \"shapes\", \"format\": \"jsonl\", \"path\": \"eval.jsonl\"}]}");
            var mixed = VisualChat.Data.DataMixer.Build(VisualChat.Data.DataConfig.Load(config), 1, enforceSkipLimit: true);
            Assert.Equal(20, mixed.Train.Count);
            var byId = mixed.Train.ToDictionary(c => c.SourceIds[0].Record);
            for (int i = 0; i < 20; i++)
            {
                var expected = generator.Generate(i);
                var read = byId[expected.Id];
                Assert.Equal(expected.Rounds.Select(r => (r.Question, r.Answer, r.Kind.ToString(), r.NewImages.Count)),
                    read.Rounds.Select(r => (r.Question, r.Answer!, r.Category!, r.NewImages.Count)));
            }
        }
        finally { Directory.Delete(folder, true); }
    }
}

public class ShapesGeneratorStabilityTests
{
    [Fact]
    public void ConversationsAreTheSameInEveryProcess()
    {
        // Pinned values: a per-process hash (HashCode) would change them from run to run.
        var conversation = new ShapesConversationGenerator(1).Generate(0);
        var first = conversation.Rounds[0];
        Assert.Equal("How many images have I shown you?", first.Question);
        Assert.Equal("2", first.Answer);
        Assert.Single(conversation.Rounds);
        var later = new ShapesConversationGenerator(1).Generate(7);
        Assert.Equal(later.Rounds.Select(r => (r.Question, r.Answer)), new ShapesConversationGenerator(1).Generate(7).Rounds.Select(r => (r.Question, r.Answer)));
    }
}
