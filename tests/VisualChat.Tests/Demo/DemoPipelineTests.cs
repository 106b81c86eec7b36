using VisualChat.Attention;
using VisualChat.Conversations;
using VisualChat.Data.Synthetic;
using VisualChat.Demo;
using VisualChat.Text;

namespace VisualChat.Tests.Demo;

public class DemoPipelineTests
{
    [Fact]
    public void QuickRecipeLearnsWellAboveChance()
    {
        var folder = Path.Combine(Path.GetTempPath(), "vchat-demo-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var log = new StringWriter();
            var result = DemoPipeline.Run(DemoRecipe.Quick(), folder, log);
            // Chance: colour 1/6, shape 1/4, count 1/4, yes/no 1/2, about 30 % overall; the answer format alone is not
            // enough. Measured with this recipe (trainer path, greedy decoding of the saved folder): colour probe 99.8 %,
            // 55.4 % exact match (56.2 % before the DSVC stage had LoRA on the LM).
            Assert.True(result.Vision.ColourAccuracy > 0.9, log.ToString());
            Assert.True(result.Accuracy > 0.45, log.ToString());
            // The DSVC stage ran through the trainer: its run folder holds what `vchat train` writes.
            Assert.True(File.Exists(Path.Combine(result.RunDir, "metrics.jsonl")), log.ToString());
            Assert.True(File.Exists(Path.Combine(result.RunDir, "loss.png")), log.ToString());
            Assert.True(Directory.Exists(Path.Combine(result.RunDir, "final")), log.ToString());
            Assert.Equal(["data", "pretraining (vision ‖ LM)", "visualchat training", "evaluation", "chat"], result.Timings.Select(t => t.Stage));
            Assert.True(File.Exists(Path.Combine(folder, "tokenizer", "tokenizer.model")) || Directory.EnumerateFiles(Path.Combine(folder, "tokenizer")).Any());

            // The saved folder is a real VisualChat model: it loads and answers through the chat API, as the demo's
            // scripted chat did (greedy, so the same answer).
            Assert.Equal(3, result.Chat.Count);
            Assert.All(result.Chat, r => Assert.False(string.IsNullOrWhiteSpace(r.Answer)));
            Assert.NotEmpty(result.Chat[0].Images);
            using var model = VisualChat.Model.VisualChatModel.Load(result.ModelFolder);
            model.eval();

            // Decoding rounds of different conversations together (left-padded) scores each round as decoding it alone.
            var held = DemoChatTraining.ReadJsonl(Path.Combine(folder, "eval", "shapes-eval.jsonl")).Take(12).ToList();
            var alone = DemoEvaluation.ExactMatch(model, held, batchSize: 1);
            var together = DemoEvaluation.ExactMatch(model, held, batchSize: 7);
            Assert.Equal(alone.Totals, together.Totals);
            Assert.Equal(alone.PerKind, together.PerKind);
            Assert.InRange(alone.Overall, 0.01, 0.999);
            Assert.Equal(VisualChat.Model.AttentionMode.Mmca, model.Config.AttentionMode);
            Assert.Equal(DemoRecipe.Quick().ImageTokens, model.ImageTokens);
            using var session = new VisualChat.Inference.Chat.ChatSession(model);
            foreach (var _ in result.Chat[0].Images) session.AddImage(Path.Combine(folder, "chat", $"image{session.Images.Count + 1}.png"));
            Assert.Equal(result.Chat[0].Answer, session.Ask(result.Chat[0].Question).Trim());
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void TokenizerKeepsTheAnswerBoundaryAndDescriptionWords()
    {
        var template = new ConversationTemplate(new ConversationTemplateOptions { SystemPrompt = null });
        var generator = new ShapesConversationGenerator(7);
        var tokenizer = DemoTokenizer.Build(Enumerable.Range(0, 200).Select(i => template.RenderText(DemoSamples.ToConversation(generator.Generate(i)))), 100);
        foreach (var word in DemoTokenizer.DescriptionWords())
            Assert.Equal(word, tokenizer.Decode([DemoTokenizer.WordId(tokenizer, word)]));
        for (int i = 200; i < 260; i++)
        {
            var shapes = generator.Generate(i);
            var sample = DemoSamples.Encode(shapes, template, tokenizer);
            Assert.Equal(shapes.Rounds.Count, sample.Answers.Length);
            Assert.Equal(shapes.Images.Count(), sample.ImagePositions.Length);
            for (int r = 0; r < shapes.Rounds.Count; r++)
            {
                var (start, end, kind) = sample.Answers[r];
                Assert.Equal(shapes.Rounds[r].Kind, kind);
                Assert.Equal(tokenizer.EosId, sample.InputIds[end - 1]);
                Assert.Equal(shapes.Rounds[r].Answer, tokenizer.Decode(sample.InputIds[start..(end - 1)]));
            }
        }
    }

    [Fact]
    public void CollateMarksImagesTextAndPadding()
    {
        var template = new ConversationTemplate(new ConversationTemplateOptions { SystemPrompt = null });
        var generator = new ShapesConversationGenerator(9);
        var tokenizer = DemoTokenizer.Build(Enumerable.Range(0, 50).Select(i => template.RenderText(DemoSamples.ToConversation(generator.Generate(i)))), 50);
        var samples = Enumerable.Range(0, 4).Select(i => DemoSamples.Encode(generator.Generate(i), template, tokenizer)).ToArray();
        using var batch = DemoSamples.Collate(samples);
        long length = batch.InputIds.shape[1];
        var modality = batch.Modality.data<long>().ToArray();
        var slots = batch.ImageSlots.data<long>().ToArray();
        Assert.Equal(samples.Sum(s => s.ImagePositions.Length), slots.Length);
        Assert.All(slots, s => Assert.Equal((long)TokenModality.Image, modality[s]));
        for (int b = 0; b < samples.Length; b++)
        {
            Assert.Equal((long)TokenModality.Text, modality[b * length]);
            if (samples[b].InputIds.Length < length) Assert.Equal((long)TokenModality.Padding, modality[b * length + length - 1]);
        }
    }
}
