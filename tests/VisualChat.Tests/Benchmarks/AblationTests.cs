using VisualChat.Benchmarks.Ablation;
using VisualChat.Conversations;
using VisualChat.Data.Synthetic;
using VisualChat.Demo;
using VisualChat.Model;
using VisualChat.Text;

namespace VisualChat.Tests.Benchmarks;

public class AblationTests
{
    [Fact]
    public void QuickAblationRunsEveryModeAndWritesItsReport()
    {
        var folder = Path.Combine(Path.GetTempPath(), "vchat-ablation-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var log = new StringWriter();
            var settings = AblationSettings.Quick();
            var result = AttentionAblation.Run(settings, log, Path.Combine(folder, "work"));
            var files = AblationReport.Write(result, folder);

            Assert.Equal(3, result.Runs.Count);
            Assert.Equal(settings.Modes.OrderBy(m => m), result.Runs.Select(r => r.Mode).OrderBy(m => m));
            foreach (var run in result.Runs)
            {
                Assert.Equal(settings.EvalSteps(), run.EvalLoss.Select(p => p.Step));
                Assert.All(run.EvalLoss, p => Assert.True(double.IsFinite(p.Loss) && p.Loss > 0, $"{run.ModeName} step {p.Step}: {p.Loss}"));
                Assert.True(float.IsFinite((float)run.FinalTrainLoss), run.ModeName);
                Assert.InRange(run.Accuracy, 0, 1);
            }
            var mmca = result.Runs.Single(r => r.Mode == AttentionMode.Mmca);
            Assert.True(mmca.EvalLoss[^1].Loss < mmca.EvalLoss[0].Loss, log.ToString());
            // causal+cross adds zero-gated cross-attention to the causal model: identical before any update.
            var causal = result.Runs.Single(r => r.Mode == AttentionMode.Causal);
            var cross = result.Runs.Single(r => r.Mode == AttentionMode.CausalCross);
            Assert.Equal(causal.EvalLoss[0].Loss, cross.EvalLoss[0].Loss, 1e-5);
            Assert.True(cross.TrainableParameters > causal.TrainableParameters);

            Assert.Equal(Path.Combine(folder, AblationReport.JsonFile), files[0]);
            Assert.All(files, f => Assert.True(new FileInfo(f).Length > 0, f));
            var png = File.ReadAllBytes(Path.Combine(folder, AblationReport.PlotFile));
            Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
            var csv = File.ReadAllLines(Path.Combine(folder, AblationReport.CsvFile));
            int kinds = Enum.GetValues<ShapesQuestion>().Length;
            Assert.Equal(1 + 3 * settings.Seeds * kinds, csv.Length);
            Assert.StartsWith("mode,seed,kind,accuracy", csv[0]);
            Assert.Equal(kinds, csv.Count(l => l.StartsWith("mmca,1,", StringComparison.Ordinal)));
            var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(files[0]))!;
            Assert.Equal(3, json["summary"]!.AsArray().Count);
            var table = AblationReport.Table(result);
            Assert.Contains("causal+cross", table);
            Assert.Contains("ImagesShown", table);
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void DescribedTextReplacesEachImageByItsThreeDescriptionWords()
    {
        var template = new ConversationTemplate(new ConversationTemplateOptions { SystemPrompt = null });
        var generator = new ShapesConversationGenerator(5);
        var tokenizer = DemoTokenizer.Build(Enumerable.Range(0, 100).Select(i => template.RenderText(DemoSamples.ToConversation(generator.Generate(i)))), 60);
        var words = DescriptionVocabulary.From(tokenizer);
        int imageId = ConversationTemplate.ImageTokenId(tokenizer);
        for (int i = 100; i < 130; i++)
        {
            var shapes = generator.Generate(i);
            var sample = DemoSamples.Encode(shapes, template, tokenizer);
            var (ids, labels) = DescribedTextPretraining.Describe(sample, words);
            Assert.DoesNotContain(imageId, ids);
            Assert.Equal(sample.InputIds.Length + 2 * sample.Scenes.Length, ids.Length);
            // The answers are unchanged: same label tokens in the same order.
            Assert.Equal(sample.Labels.Where(l => l != ConversationTemplate.IgnoreLabel), labels.Where(l => l != ConversationTemplate.IgnoreLabel));
            var text = tokenizer.Decode(ids);
            foreach (var scene in shapes.Images)
                Assert.Contains($"{scene.Count} {ShapeScene.Name(scene.Color)} {ShapeScene.Name(scene.Kind)}", text);
        }
    }

    [Fact]
    public void SummaryUsesSampleStandardDeviationOverSeeds()
    {
        var stats = MeanStd.Of([0.5, 0.7, 0.9]);
        Assert.Equal(0.7, stats.Mean, 12);
        Assert.Equal(0.2, stats.Std, 12);
        Assert.Equal(0.5, stats.Min);
        Assert.Equal(0.9, stats.Max);
        Assert.Equal(0, MeanStd.Of([0.4]).Std);
        // The trainer evaluates every eval_every_steps, so the steps must split evenly into the eval points.
        var settings = new AblationSettings { Steps = 240, EvalPoints = 8 };
        Assert.Equal([0, 30, 60, 90, 120, 150, 180, 210, 240], settings.EvalSteps());
        Assert.Throws<ArgumentException>(() => (settings with { Steps = 250 }).Validated());
        Assert.Equal(1, new AblationSettings().Workers);
    }
}
