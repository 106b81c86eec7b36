using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Inference;
using VisualChat.Inference.Chat;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;

namespace VisualChat.Tests.Chat;

public sealed class ChatProcessorTests(ChatTestModel fixture) : IClassFixture<ChatTestModel>
{
    [Fact]
    public void ChatIdsOverThreeRoundsEqualTheTemplatesIdsOfTheSameConversation()
    {
        using var model = fixture.Load();
        var processor = VisualChatProcessor.Load(fixture.ModelFolder);
        // Answers end by length (no EOS): the template ends every answer with EOS, so chat must put one in front of the next round.
        using var session = new ChatSession(model, processor: processor) { Parameters = new GenerationOptions { MaxNewTokens = 4, StopTokenIds = [] } };
        string[] images = [fixture.WritePng("three1.png", 1), fixture.WritePng("three2.png", 2), fixture.WritePng("three3.png", 3)];
        session.AddImage(images[0]);
        session.Ask("What is in the image?");
        session.AddImage(images[1]);
        session.AddImage(images[2]);
        session.Ask("And in these two?");
        session.Ask("Compare all three.");
        Assert.All(session.Rounds, r => Assert.Equal(4, r.AnswerIds!.Count));

        var conversation = new Conversation("chat",
            session.Rounds.Select(r => new Round(r.Images.Select(s => (ImageRef)new FileImageRef(s)).ToArray(), r.Question, r.Answer)).ToArray(),
            [], session.SystemPrompt ?? "");
        var template = new ConversationTemplate(model.Config.TemplateOptions);
        var rounds = template.TokenizeRounds(conversation, processor.Tokenizer);
        var expected = new List<int>();
        for (int r = 0; r < rounds.Count; r++) {
            if (r > 0) expected.Add(processor.Tokenizer.EosId);
            expected.AddRange(rounds[r].InputIds.Where((_, i) => i < PromptLength(rounds[r])));
            expected.AddRange(session.Rounds[r].AnswerIds!);
        }
        Assert.Equal(3, expected.Count(id => id == model.Config.ImageTokenId));
        Assert.Equal(expected, session.ConversationIds);
    }

    static int PromptLength(RoundTokens round)
    {
        int n = 0;
        while (n < round.Labels.Length && round.Labels[n] == ConversationTemplate.IgnoreLabel) n++;
        return n;
    }

    [Fact]
    public void ProcessorLoadedFromTheFolderEqualsTheModelsAndMakesRoundsWithPlaceholdersAndPixels()
    {
        using var model = fixture.Load();
        var loaded = VisualChatProcessor.Load(fixture.ModelFolder);
        var fromModel = VisualChatProcessor.From(model);
        var image = ImageLoader.Load(fixture.WritePng("processor.png", 4));
        var conversation = new Conversation("chat", [new Round([new FileImageRef("processor.png")], "What is it?", null)], [], "");
        var prompt = loaded.ProcessRound(conversation, [image], previousAnswerLacksEos: true);
        using var pixels = prompt.Pixels!;
        Assert.Equal(fromModel.RoundIds(conversation, previousAnswerLacksEos: true), prompt.Ids);
        Assert.Equal(loaded.Tokenizer.EosId, prompt.Ids[0]);
        Assert.Single(prompt.Ids, id => id == model.Config.ImageTokenId);
        Assert.Equal(new long[] { 1, 3, model.VisionEncoder.ImageSize, model.VisionEncoder.ImageSize }, pixels.shape);
        using var expected = fromModel.Pixels([image])!;
        Assert.True(expected.equal(pixels).all().item<bool>());
        Assert.Null(loaded.Pixels([]));
        Assert.Equal(fromModel.ImageProcessorConfig.CropSize, loaded.ImageProcessorConfig.CropSize);
    }

    [Fact]
    public void ProcessorLoadNamesTheMissingFile()
    {
        var missing = Path.Combine(fixture.Root, "no-such-model");
        var e = Assert.Throws<FileNotFoundException>(() => VisualChatProcessor.Load(missing));
        Assert.Contains(missing, e.Message);
    }
}
