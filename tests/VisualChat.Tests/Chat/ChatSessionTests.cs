using VisualChat.Inference;
using VisualChat.Inference.Chat;
using VisualChat.Inference.Generation;

namespace VisualChat.Tests.Chat;

public sealed class ChatSessionTests(ChatTestModel fixture) : IClassFixture<ChatTestModel>
{
    static readonly GenerationOptions Greedy = new() { MaxNewTokens = 6 };

    [Fact]
    public void EachImageIsEncodedOnce_AcrossRounds()
    {
        using var model = fixture.Load();
        using var session = new ChatSession(model) { Parameters = Greedy };
        session.AddImage(fixture.WritePng("once1.png", 1));
        session.Ask("What is in the image?");
        Assert.Equal(1, model.EncodedImageCount);
        session.AddImage(ChatTestModel.Png(2), "second.png");
        session.Ask("And now?");
        Assert.Equal(2, model.EncodedImageCount);
        session.Ask("Compare them.");
        Assert.Equal(2, model.EncodedImageCount);
        Assert.Equal([1, 2], session.Images.Select(i => i.Number));
        Assert.All(session.Images, i => Assert.False(i.Pending));
        Assert.Equal(3, session.Rounds.Count);
        Assert.Equal(session.Rounds[^1].AnswerIds!.Count, session.LastTiming!.Tokens);
        Assert.True(session.LastTiming.TimeToFirstToken <= session.LastTiming.Total);
    }

    [Fact]
    public void StreamedDeltas_ConcatenateToTheAnswer()
    {
        using var model = fixture.Load();
        using var session = new ChatSession(model) { Parameters = Greedy with { MaxNewTokens = 12 } };
        var streamed = new System.Text.StringBuilder();
        var answer = session.Ask("Say something.", d => streamed.Append(d));
        Assert.Equal(answer, streamed.ToString());
    }

    [Fact]
    public void DifferentImages_GiveDifferentLogits()
    {
        using var model = fixture.Load();
        float[] NextLogits(int seed)
        {
            using var session = new ChatSession(model) { Parameters = Greedy with { MaxNewTokens = 0 } };
            session.AddImage(ChatTestModel.Png(seed), "x.png");
            session.Ask("Describe it.");
            return session.NextTokenLogits();
        }
        Assert.NotEqual(NextLogits(1), NextLogits(2));
    }

    [Fact]
    public void SaveAndLoad_ContinuesTheSameConversation()
    {
        var file = Path.Combine(fixture.Root, "conversation.json");
        string expected;
        ChatTranscript saved;
        using (var model = fixture.Load())
        using (var session = new ChatSession(model) { Parameters = Greedy }) {
            session.AddImage(fixture.WritePng("save1.png", 3));
            session.Ask("First question?");
            session.AddImage(fixture.WritePng("save2.png", 4));
            session.Ask("Second question?");
            saved = session.ToTranscript();
            saved.Save(file);
            expected = session.Ask("Third question?");
        }
        using (var model = fixture.Load())
        using (var session = new ChatSession(model) { Parameters = Greedy }) {
            session.LoadTranscript(ChatTranscript.Load(file));
            Assert.Equal(2, model.EncodedImageCount);
            var reloaded = session.ToTranscript();
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(saved), System.Text.Json.JsonSerializer.Serialize(reloaded));
            Assert.Equal(expected, session.Ask("Third question?"));
        }
    }

    [Fact]
    public void ContextOverflow_ThrowsContextFull_AndResetRecovers()
    {
        using var model = fixture.Load();
        using var session = new ChatSession(model) { Parameters = Greedy with { MaxNewTokens = 2 } };
        var longQuestion = string.Join(' ', Enumerable.Repeat("why", 120));
        var e = Assert.Throws<ContextFullException>(() => { for (int i = 0; i < 20; i++) session.Ask(longQuestion); });
        Assert.Equal(session.MaxContext, e.MaxContext);
        Assert.True(session.ContextLength <= session.MaxContext);
        int rounds = session.Rounds.Count;
        Assert.InRange(rounds, 1, 19);
        session.Reset();
        Assert.Empty(session.Rounds);
        session.Ask("Short one.");
        Assert.Single(session.Rounds);
    }

    [Fact]
    public void MissingOrBrokenImage_IsReportedWithItsName()
    {
        using var model = fixture.Load();
        using var session = new ChatSession(model);
        var missing = Path.Combine(fixture.Root, "nope.png");
        Assert.Contains("nope.png", Assert.ThrowsAny<IOException>(() => session.AddImage(missing)).Message);
        Assert.ThrowsAny<Exception>(() => session.AddImage([1, 2, 3, 4], "garbage.png"));
        Assert.Empty(session.Images);
    }
}
