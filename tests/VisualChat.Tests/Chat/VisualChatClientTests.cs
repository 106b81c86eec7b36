using Microsoft.Extensions.AI;
using VisualChat.Inference;
using VisualChat.Inference.Chat;
using VisualChat.Inference.Generation;

namespace VisualChat.Tests.Chat;

public sealed class VisualChatClientTests(ChatTestModel fixture) : IClassFixture<ChatTestModel>
{
    static readonly ChatOptions Options = new() { MaxOutputTokens = 8, Temperature = 0 };

    List<ChatMessage> Interleaved(int firstSeed, string secondPath) =>
    [
        new(ChatRole.User, [
            new TextContent("Look at these."),
            new DataContent(ChatTestModel.Png(firstSeed), "image/png"),
            new UriContent(new Uri(secondPath), "image/png"),
            new TextContent("What differs?"),
        ]),
    ];

    [Fact]
    public async Task InterleavedImages_ReachTheModel_LikeAChatSession()
    {
        var second = fixture.WritePng("client2.png", 22);
        using var model = fixture.Load();
        using var client = new VisualChatClient(model, fixture.ModelFolder);
        var response = await client.GetResponseAsync(Interleaved(21, second), Options);
        Assert.Equal(2, model.EncodedImageCount);
        Assert.Equal(VisualChatClient.ProviderName, client.GetService<ChatClientMetadata>()!.ProviderName);
        Assert.Equal(fixture.ModelFolder, response.ModelId);

        using var reference = new ChatSession(model) { Parameters = new GenerationOptions { MaxNewTokens = 8 } };
        reference.AddImage(ChatTestModel.Png(21), "a.png");
        reference.AddImage(second);
        Assert.Equal(reference.Ask("Look at these.\nWhat differs?"), response.Text);
        Assert.Equal([2], reference.Images.Select(i => i.Number).Skip(1));
    }

    [Fact]
    public void DifferentImages_ChangeTheModelInput()
    {
        using var model = fixture.Load();
        var (system, rounds) = VisualChatClient.ToRounds(Interleaved(31, fixture.WritePng("client3.png", 32)));
        Assert.Null(system);
        var round = Assert.Single(rounds);
        Assert.Equal("Look at these.\nWhat differs?", round.Question);
        Assert.Equal(2, round.Images.Count);
        Assert.StartsWith("data:image/png;base64,", round.Images[0]);
        Assert.EndsWith("client3.png", round.Images[1]);

        float[] Logits(int seed)
        {
            using var session = new ChatSession(model) { Parameters = new GenerationOptions { MaxNewTokens = 0 } };
            session.AddImage(round.Images[1]);
            session.AddImage(ChatTestModel.Png(seed), "x.png");
            session.Ask(round.Question);
            return session.NextTokenLogits();
        }
        Assert.NotEqual(Logits(1), Logits(2));
    }

    [Fact]
    public async Task Streaming_ConcatenatesToTheResponse_AndFollowUpsReuseTheCache()
    {
        var second = fixture.WritePng("client4.png", 42);
        using var model = fixture.Load();
        using var client = new VisualChatClient(model, fixture.ModelFolder);
        var messages = Interleaved(41, second);
        var full = await client.GetResponseAsync(messages, Options);
        long encoded = model.EncodedImageCount;

        var streamed = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in client.GetStreamingResponseAsync(messages, Options)) {
            streamed.Append(update.Text);
            finish ??= update.FinishReason;
        }
        Assert.Equal(full.Text, streamed.ToString());
        Assert.Equal(full.FinishReason, finish);

        // A follow-up that extends the conversation keeps the cached rounds: only the new image is encoded.
        encoded = model.EncodedImageCount;
        messages.Add(new ChatMessage(ChatRole.Assistant, full.Text));
        messages.Add(new ChatMessage(ChatRole.User, [new DataContent(ChatTestModel.Png(43), "image/png"), new TextContent("And this?")]));
        var followUp = await client.GetResponseAsync(messages, Options);
        Assert.Equal(encoded + 1, model.EncodedImageCount);

        // The same conversation sent to a fresh client is rebuilt from scratch (all three images encoded).
        using var freshModel = fixture.Load();
        using var fresh = new VisualChatClient(freshModel, fixture.ModelFolder);
        Assert.NotNull((await fresh.GetResponseAsync(messages, Options)).Text);
        Assert.Equal(3, freshModel.EncodedImageCount);
        Assert.Throws<ArgumentException>(() => VisualChatClient.ToRounds([new ChatMessage(ChatRole.Assistant, "hi")]));
        Assert.Equal("be brief", VisualChatClient.ToRounds([new ChatMessage(ChatRole.System, "be brief"), new ChatMessage(ChatRole.User, "q")]).System);
    }
}

public sealed class VisualChatClientOptionsTests(ChatTestModel fixture) : IClassFixture<ChatTestModel>
{
    static List<ChatMessage> Question() => [new(ChatRole.User, [new DataContent(ChatTestModel.Png(51), "image/png"), new TextContent("Describe it.")])];

    static async Task<(string Text, List<string> Deltas, ChatFinishReason? Finish)> Stream(IChatClient client, ChatOptions options)
    {
        var deltas = new List<string>();
        ChatFinishReason? finish = null;
        await foreach (var update in client.GetStreamingResponseAsync(Question(), options)) {
            if (update.Text.Length > 0) deltas.Add(update.Text);
            finish ??= update.FinishReason;
        }
        return (string.Concat(deltas), deltas, finish);
    }

    [Fact]
    public async Task StopSequencesEndTheStreamWithoutTheStopText()
    {
        using var model = fixture.Load();
        using var client = new VisualChatClient(model, fixture.ModelFolder, global::VisualChat.Model.VisualChatProcessor.Load(fixture.ModelFolder));
        var free = await client.GetResponseAsync(Question(), new ChatOptions { MaxOutputTokens = 16, Temperature = 0 });
        Assert.True(free.Text.Length >= 6, $"the free answer '{free.Text}' is too short for this test to mean anything");
        Assert.Equal(ChatFinishReason.Length, free.FinishReason);

        var stop = free.Text.Substring(free.Text.Length / 2, 2);
        var expected = free.Text[..free.Text.IndexOf(stop, StringComparison.Ordinal)];
        var (text, deltas, finish) = await Stream(client, new ChatOptions { MaxOutputTokens = 16, Temperature = 0, StopSequences = [stop] });
        Assert.Equal(expected, text);
        Assert.Equal(ChatFinishReason.Stop, finish);
        Assert.DoesNotContain(deltas, d => d.Contains(stop, StringComparison.Ordinal));
        Assert.Equal(expected, (await client.GetResponseAsync(Question(), new ChatOptions { MaxOutputTokens = 16, Temperature = 0, StopSequences = [stop] })).Text);

        var (shorter, _, lengthFinish) = await Stream(client, new ChatOptions { MaxOutputTokens = 2, Temperature = 0 });
        Assert.StartsWith(shorter, free.Text);
        Assert.Equal(ChatFinishReason.Length, lengthFinish);
    }

    [Fact]
    public async Task SeedTemperatureAndTopPReachTheSampler()
    {
        using var model = fixture.Load();
        using var client = new VisualChatClient(model, fixture.ModelFolder);
        ChatOptions Sampling(long seed) => new() { MaxOutputTokens = 10, Temperature = 1.5f, TopP = 0.99f, Seed = seed };
        var first = (await Stream(client, Sampling(1))).Text;
        Assert.Equal(first, (await Stream(client, Sampling(1))).Text);
        var others = new List<string>();
        for (long seed = 2; seed < 6; seed++) others.Add((await Stream(client, Sampling(seed))).Text);
        Assert.Contains(others, o => o != first);
        // TopP that keeps only the most likely token is greedy whatever the seed and temperature.
        var greedy = (await client.GetResponseAsync(Question(), new ChatOptions { MaxOutputTokens = 10, Temperature = 0 })).Text;
        Assert.Equal(greedy, (await Stream(client, new ChatOptions { MaxOutputTokens = 10, Temperature = 1.5f, TopP = 1e-6f, Seed = 3 })).Text);
    }
}
