using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Text;

namespace VisualChat.Tests.Data;

public class ConversationTemplateTests
{
    private static readonly ImageRef A = new FileImageRef("/img/a.png");
    private static readonly ImageRef B = new FileImageRef("/img/b.png");
    private static readonly ImageRef C = new FileImageRef("/img/c.png");

    private static Conversation TwoRounds(string? lastAnswer = "A2") => new("test",
        [new Round([A, B], "Q1", "A1"), new Round([C], "Q2", lastAnswer)], [new SourceId("f", "r")]);

    [Fact]
    public void Renders_the_DeepSpeed_VisualChat_template_byte_for_byte()
    {
        var template = new ConversationTemplate();
        var expected =
            "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.\n\n" +
            "### Image 1:\n<image>\n### Image 2:\n<image>\n\n### Question:\nQ1\n\n### Answer:\nA1" +
            "### Image 3:\n<image>\n\n### Question:\nQ2\n\n### Answer:\nA2";
        Assert.Equal(expected, template.RenderText(TwoRounds()));
    }

    [Fact]
    public void Round_without_images_and_custom_or_empty_system()
    {
        var conversation = new Conversation("t", [new Round([A], "Q1", "A1"), Round.TextOnly("Q2", "A2")], [], System: "SYS");
        Assert.Equal("SYS\n\n### Image 1:\n<image>\n\n### Question:\nQ1\n\n### Answer:\nA1### Question:\nQ2\n\n### Answer:\nA2",
            new ConversationTemplate().RenderText(conversation));
        var noSystem = new ConversationTemplate(new ConversationTemplateOptions { SystemPrompt = null });
        Assert.Equal("### Image 1:\n<image>\n\n### Question:\nQ\n\n### Answer:\n",
            noSystem.RenderInferencePrompt(new Conversation("t", [new Round([A], "Q", null)], [])));
    }

    [Fact]
    public void Segments_mark_prompt_and_answer()
    {
        var segments = new ConversationTemplate(new() { SystemPrompt = "" }).RenderSegments(TwoRounds());
        Assert.Equal([SegmentRole.Prompt, SegmentRole.Answer, SegmentRole.Prompt, SegmentRole.Answer], segments.Select(s => s.Role));
        Assert.Equal("A1", segments[1].Text);
        Assert.Equal([0, 0, 1, 1], segments.Select(s => s.RoundIndex));
    }

    [Fact]
    public void Inference_prompt_is_the_training_prefix_in_text_and_tokens()
    {
        var template = new ConversationTemplate();
        var training = template.RenderText(TwoRounds());
        var prompt = template.RenderInferencePrompt(TwoRounds(lastAnswer: null));
        Assert.StartsWith(prompt, training);
        Assert.Equal(training, prompt + "A2");

        var tokenizer = new FakeCharTokenizer();
        var trainIds = template.Tokenize(TwoRounds(), tokenizer).InputIds;
        var promptIds = template.TokenizePrompt(TwoRounds(lastAnswer: null), tokenizer).InputIds;
        Assert.Equal(promptIds, trainIds.Take(promptIds.Length));
        Assert.Throws<ArgumentException>(() => template.RenderInferencePrompt(TwoRounds()));
    }

    [Fact]
    public void Labels_cover_only_answers_and_eos_and_placeholders_are_found()
    {
        var tokenizer = new FakeCharTokenizer();
        var template = new ConversationTemplate(new() { SystemPrompt = "S" });
        var sample = template.Tokenize(TwoRounds(), tokenizer);
        Assert.Equal(sample.InputIds.Length, sample.Labels.Length);
        // Learned tokens decode to exactly the answers, each followed by EOS.
        var learned = sample.Labels.Where(l => l != -100).ToArray();
        Assert.Equal(tokenizer.Encode("A1").Append(2).Concat(tokenizer.Encode("A2")).Append(2), learned);
        // Two BOS (one per round, as DeepSpeed-VisualChat tokenizes rounds separately), never learned.
        Assert.Equal([0, Array.IndexOf(sample.InputIds, 2) + 1], Enumerable.Range(0, sample.Length).Where(i => sample.InputIds[i] == 1));
        Assert.Equal(3, sample.ImagePositions.Length);
        Assert.All(sample.ImagePositions, p => Assert.Equal(FakeCharTokenizer.ImageId, sample.InputIds[p]));
        Assert.Equal([A, B, C], sample.Images);
        Assert.Equal(sample.Length + 3 * 255, sample.ExpandedLength(256));
        var text = tokenizer.Decode(sample.InputIds);
        Assert.Equal(template.RenderText(TwoRounds()), text);
    }

    [Fact]
    public void No_hard_image_limit_numbering_counts_on()
    {
        var images = Enumerable.Range(0, 12).Select(i => (ImageRef)new FileImageRef($"/{i}.png")).ToArray();
        var text = new ConversationTemplate().RenderText(new Conversation("t", [new Round(images, "Q", "A")], []));
        Assert.Contains("### Image 12:\n<image>\n\n### Question:", text);
    }

    [Fact]
    public void Placeholder_text_in_a_question_is_rejected_at_tokenization()
    {
        var bad = new Conversation("t", [new Round([A], "look <image>", "A")], [new SourceId("f.json", "7")]);
        var e = Assert.Throws<InvalidDataException>(() => new ConversationTemplate().Tokenize(bad, new FakeCharTokenizer()));
        Assert.Contains("f.json#7", e.Message);
    }
}
