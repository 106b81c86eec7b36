using System.CommandLine;
using System.Text.Json;
using VisualChat.Cli.Commands;
using VisualChat.Inference;
using VisualChat.Inference.Evaluation;
using VisualChat.Inference.Generation;

namespace VisualChat.Tests.Chat;

public sealed class EvalTests(ChatTestModel fixture) : IClassFixture<ChatTestModel>
{
    static readonly string EvalData = Path.Combine(ChatTestModel.RepoRoot(), "..", "shared", "data", "dsvc-eval", "eval", "eval_data");
    static readonly string[] Files = ["eval_single.json", "eval_comprehensive.json", "eval_robustness.json"];

    /// <summary>Rows the JSON implies: (test, images as written, question) for each round of each conversation whose images all exist.</summary>
    static List<string[]> ExpectedRows(string file, out List<string> skipped)
    {
        var root = Path.GetFullPath(Path.Combine(EvalData, "..", ".."));
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(EvalData, file)));
        var rows = new List<string[]>();
        skipped = [];
        foreach (var test in doc.RootElement.EnumerateObject()) {
            var rounds = test.Value.EnumerateArray().Select(r => (Question: r[0].GetString()!,
                Images: r.GetArrayLength() == 2 ? r[1].GetString()!.Split(' ', StringSplitOptions.RemoveEmptyEntries) : [])).ToList();
            if (rounds.SelectMany(r => r.Images).Any(p => !File.Exists(Path.Combine(root, p)))) { skipped.Add(test.Name); continue; }
            rows.AddRange(rounds.Select(r => new[] { test.Name, string.Join(' ', r.Images), r.Question }));
        }
        return rows;
    }

    [Fact]
    public void EvalOnTheRealFiles_WritesOneRowPerRound_AndSkipsMissingImages()
    {
        var root = new RootCommand { EvalCommand.Create() };
        var allSkipped = new List<string>();
        foreach (var file in Files) {
            var csvPath = Path.Combine(fixture.Root, Path.ChangeExtension(file, ".csv"));
            var output = new StringWriter();
            var error = new StringWriter();
            int rc = root.Parse(["eval", "--model", fixture.ModelFolder, "--conversations", Path.Combine(EvalData, file), "--out", csvPath, "--max-new-tokens", "4"])
                .Invoke(new InvocationConfiguration { Output = output, Error = error });
            Assert.True(rc == 0, error.ToString());
            var expected = ExpectedRows(file, out var skipped);
            allSkipped.AddRange(skipped);
            var rows = CsvWriter.Parse(File.ReadAllText(csvPath));
            Assert.Equal(["test_name", "image_path", "question", "answer"], rows[0]);
            Assert.Equal(expected.Count, rows.Count - 1);
            for (int i = 0; i < expected.Count; i++) Assert.Equal(expected[i], rows[i + 1][..3]);
            foreach (var name in skipped) Assert.Contains($"skipping test '{name}'", error.ToString());
            Assert.Contains($"{skipped.Count} skipped", output.ToString());
        }
        Assert.NotEmpty(allSkipped);
        Assert.All(allSkipped, name => Assert.Contains("zootopia", name, StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public void BatchedEval_EqualsUnbatched()
    {
        var json = Path.Combine(EvalData, "eval_comprehensive.json");
        var cases = DsvcEvaluation.ReadCases(json, DsvcEvaluation.FindImagesRoot(json)!).Take(7).ToList();
        using var model = fixture.Load();
        var options = new GenerationOptions { MaxNewTokens = 4 };
        var (unbatched, _) = new DsvcEvaluation(model, options, batchSize: 1).Run(cases);
        var (batched, summary) = new DsvcEvaluation(model, options, batchSize: 4).Run(cases);
        Assert.Equal(unbatched, batched);
        Assert.Equal(summary.Rounds, batched.Count);
    }

    [Fact]
    public void ConversationsOutgrowingTheContext_AreSkippedWithTheReason()
    {
        var json = Path.Combine(EvalData, "eval_single.json");
        var cases = DsvcEvaluation.ReadCases(json, DsvcEvaluation.FindImagesRoot(json)!).Take(2).ToList();
        using var model = fixture.Load();
        model.LmConfig.MaxPositionEmbeddings = 40;
        var reasons = new List<string>();
        var (rows, summary) = new DsvcEvaluation(model, new GenerationOptions { MaxNewTokens = 2 }).Run(cases, (c, reason) => reasons.Add(c.TestName + ": " + reason));
        Assert.Empty(rows);
        Assert.Equal(2, summary.ConversationsSkipped);
        Assert.Equal(0, summary.ConversationsDone);
        Assert.All(reasons, r => Assert.Contains("max_position_embeddings", r));
    }

    [Fact]
    public void ImagesRoot_IsFoundAboveTheJson()
    {
        var root = DsvcEvaluation.FindImagesRoot(Path.Combine(EvalData, "eval_single.json"));
        Assert.Equal(Path.GetFullPath(Path.Combine(EvalData, "..", "..")).TrimEnd('/'), root!.TrimEnd('/'));
    }

    [Fact]
    public void Csv_EscapesCommasQuotesAndNewlines()
    {
        var writer = new StringWriter();
        DsvcEvaluation.WriteCsv(writer, [new EvalRow("t,1", "a.png b.png", "say \"hi\"", "line1\nline2")]);
        Assert.Equal("test_name,image_path,question,answer\n\"t,1\",a.png b.png,\"say \"\"hi\"\"\",\"line1\nline2\"\n", writer.ToString());
        Assert.Equal(["t,1", "a.png b.png", "say \"hi\"", "line1\nline2"], CsvWriter.Parse(writer.ToString())[1]);
    }
}
