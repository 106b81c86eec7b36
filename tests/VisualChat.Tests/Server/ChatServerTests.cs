using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using OpenAI;
using OpenAI.Chat;
using VisualChat.Inference.Chat;
using VisualChat.Model;
using VisualChat.Server;
using VisualChat.Tests.Chat;

namespace VisualChat.Tests.Server;

/// <summary>
/// <c>vchat serve</c> end to end on loopback with the tiny preset: the official OpenAI .NET client and raw HTTP, the
/// in-process <see cref="ChatSession"/> as the oracle of a first round, a server without conversation cache as the
/// oracle of warm turns, and every error status.
/// </summary>
public sealed class ChatServerTests(ServerTestHost host) : IClassFixture<ServerTestHost>
{
    static ChatClient Client(VisualChatServer server, string key = ServerTestHost.Key) =>
        new(ServerTestHost.ModelName, new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress, "v1") });

    static UserChatMessage UserWithImages(string text, params int[] seeds) => new(
        [.. seeds.Select(s => ChatMessageContentPart.CreateImagePart(BinaryData.FromBytes(ChatTestModel.Png(s)), "image/png")), ChatMessageContentPart.CreateTextPart(text)]);

    [Fact]
    public async Task OpenAIClient_ThreeRoundsWithImages_FirstRoundEqualsChatSession_StreamingEqualsNonStreaming()
    {
        await using var server = await host.StartAsync(o => o with { ApiKey = ServerTestHost.Key });
        var client = Client(server);
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 10 };

        var messages = new List<ChatMessage> { UserWithImages("What differs between the two pictures?", 1, 2) };
        ChatCompletion first = await client.CompleteChatAsync(messages, options);
        Assert.Equal(ChatMessageRole.Assistant, first.Role);
        Assert.Equal(ServerTestHost.ModelName, first.Model);
        Assert.True(first.Usage.OutputTokenCount is > 0 and <= 10);
        Assert.True(first.Usage.InputTokenCount > 2 * 17, "two images of 17 positions each count in the prompt");
        string answer1 = first.Content[0].Text;

        // The oracle: the same question asked in-process through the product's chat session.
        using (var model = VisualChatModel.Load(host.ModelFolder)) {
            using var session = new ChatSession(model, processor: VisualChatProcessor.Load(host.ModelFolder)) { Parameters = new() { MaxNewTokens = 10 } };
            session.AddImage(ChatTestModel.Png(1), "a.png");
            session.AddImage(ChatTestModel.Png(2), "b.png");
            Assert.Equal(session.Ask("What differs between the two pictures?"), answer1);
        }

        messages.Add(new AssistantChatMessage(answer1));
        messages.Add(new UserChatMessage("And the colours?"));
        string answer2 = (await client.CompleteChatAsync(messages, options)).Value.Content[0].Text;
        messages.Add(new AssistantChatMessage(answer2));
        messages.Add(UserWithImages("Compare Image 3 with Image 1.", 3));

        var streamed = new StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in client.CompleteChatStreamingAsync(messages, options)) {
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }
        var whole = (await client.CompleteChatAsync(messages, options)).Value;
        Assert.Equal(whole.Content[0].Text, streamed.ToString());
        Assert.Equal(whole.FinishReason, finish);
        Assert.NotNull(usage);
        Assert.Equal(whole.Usage.InputTokenCount, usage!.InputTokenCount);
        Assert.Equal(whole.Usage.OutputTokenCount, usage.OutputTokenCount);
        Assert.True(usage.InputTokenCount > 3 * 17);
    }

    [Fact]
    public async Task WarmTurnsEqualColdRuns_AndReuseTheConversationCache()
    {
        await using var warm = await host.StartAsync();
        await using var cold = await host.StartAsync(o => o with { KvCacheMb = 0, ImageCacheMb = 0 });
        // Without conversation reuse every turn re-prefills round 1; its images then come from the image feature cache.
        await using var features = await host.StartAsync(o => o with { KvCacheMb = 0 });
        foreach (var sampling in new[] { (JsonNode?)null, 0.9 }) {
            var messages = new List<JsonObject> { ServerTestHost.User(ServerTestHost.ImagePart(11), ServerTestHost.ImagePart(12), ServerTestHost.TextPart("Describe both.")) };
            var round3Cached = 0L;
            for (int round = 1; round <= 3; round++) {
                var body = ServerTestHost.Body([.. messages.Select(m => (JsonObject)m.DeepClone())]);
                if (sampling is not null) { body["temperature"] = sampling.DeepClone(); body["seed"] = 7; }
                var (warmStatus, warmJson, _) = await ServerTestHost.PostAsync(warm, body.ToJsonString());
                var (coldStatus, coldJson, _) = await ServerTestHost.PostAsync(cold, body.ToJsonString());
                var (_, featuresJson, _) = await ServerTestHost.PostAsync(features, body.ToJsonString());
                Assert.Equal((string)coldJson!["choices"]![0]!["message"]!["content"]!, (string)featuresJson!["choices"]![0]!["message"]!["content"]!);
                Assert.Equal(200, warmStatus);
                Assert.Equal(200, coldStatus);
                string warmText = (string)warmJson!["choices"]![0]!["message"]!["content"]!;
                Assert.Equal((string)coldJson!["choices"]![0]!["message"]!["content"]!, warmText);
                Assert.Equal((long)coldJson["usage"]!["completion_tokens"]!, (long)warmJson["usage"]!["completion_tokens"]!);
                Assert.Equal(0L, (long)coldJson["usage"]!["prompt_tokens_details"]!["cached_tokens"]!);
                long cached = (long)warmJson["usage"]!["prompt_tokens_details"]!["cached_tokens"]!;
                if (round > 1) Assert.True(cached > 0, $"round {round} reuses the earlier rounds' cache");
                if (round == 3) round3Cached = cached;
                messages.Add(ServerTestHost.Assistant(warmText));
                messages.Add(round == 1 ? ServerTestHost.User(ServerTestHost.TextPart("Which is brighter?"))
                    : ServerTestHost.User(ServerTestHost.ImagePart(13), ServerTestHost.TextPart("And this one?")));
            }
            Assert.True(round3Cached > 2 * 17, "round 3 reuses the positions of both images of round 1");
        }
        Assert.Contains("vchat_kv_reuse_positions_total", warm.Metrics.ToPrometheus());
        Assert.True(warm.Metrics.PositionsReused > 0);
        Assert.Equal(0, cold.Metrics.PositionsReused);
        Assert.True(features.Metrics.ImageFeatureHits > 0, "re-prefilled images come from the feature cache");
        Assert.Equal(0, cold.Metrics.ImageFeatureHits + cold.Metrics.ImageFeatureMisses);
        Assert.Contains("vchat_image_feature_cache_hits_total", features.Metrics.ToPrometheus());
    }

    /// <summary>A turn whose assistant message re-tokenizes to the ids the server generated reuses those positions
    /// (decode-time keys and values) and prefills only the rest of its chunk, here with a new image after the answer;
    /// the answers still equal a cold server's. The tiny preset's random answers mostly do not re-tokenize (lone UTF-8
    /// bytes come back as U+FFFD, a first piece without "▁" comes back with it); seed 8's answer to this prompt does.</summary>
    [Fact]
    public async Task AnAnswerThatReTokenizesToItsIdsIsReused_AndTurnsStillEqualColdRuns()
    {
        string folder = Path.Combine(host.Root, "seed-8");
        if (!Directory.Exists(folder)) {
            using var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 8);
            model.Save(folder);
        }
        ServerOptions Options(ServerOptions o) => o with { ModelFolder = folder };
        await using var warm = await host.StartAsync(Options);
        await using var cold = await host.StartAsync(o => Options(o) with { KvCacheMb = 0, ImageCacheMb = 0 });
        var messages = new List<JsonObject> { ServerTestHost.User(ServerTestHost.ImagePart(11), ServerTestHost.TextPart("Describe both.")) };
        long previousPrompt = 0;
        for (int round = 1; round <= 3; round++) {
            var body = ServerTestHost.Body([.. messages.Select(m => (JsonObject)m.DeepClone())]);
            // Round 1 greedy (the answer that re-tokenizes); then sampled, which any change of the logits would move.
            if (round > 1) { body["temperature"] = 1.0; body["seed"] = 3; }
            var (warmStatus, warmJson, _) = await ServerTestHost.PostAsync(warm, body.ToJsonString());
            var (coldStatus, coldJson, _) = await ServerTestHost.PostAsync(cold, body.ToJsonString());
            Assert.Equal((200, 200), (warmStatus, coldStatus));
            string warmText = (string)warmJson!["choices"]![0]!["message"]!["content"]!;
            Assert.Equal((string)coldJson!["choices"]![0]!["message"]!["content"]!, warmText);
            long cached = (long)warmJson["usage"]!["prompt_tokens_details"]!["cached_tokens"]!;
            if (round == 2)
                Assert.True(cached > previousPrompt, $"round 2 reuses the round-1 answer's positions beyond its prompt of {previousPrompt} (cached {cached}; answer '{warmText}')");
            previousPrompt = (long)warmJson["usage"]!["prompt_tokens"]!;
            messages.Add(ServerTestHost.Assistant(warmText));
            messages.Add(round == 1 ? ServerTestHost.User(ServerTestHost.ImagePart(12), ServerTestHost.TextPart("And this one?"))
                : ServerTestHost.User(ServerTestHost.TextPart("Which is brighter?")));
        }
    }

    [Fact]
    public async Task RawHttp_StreamHasOpenAIChunkShapes_UsageChunk_AndDone()
    {
        await using var server = await host.StartAsync();
        var body = ServerTestHost.Body(ServerTestHost.User(ServerTestHost.ImagePart(1), ServerTestHost.TextPart("Hi")));
        body["stream"] = true;
        body["stream_options"] = new JsonObject { ["include_usage"] = true };
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var response = await http.PostAsync("v1/chat/completions", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: ", e));
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonNode.Parse(e["data: ".Length..])!.AsObject()).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", (string)c["object"]!));
        Assert.Single(chunks.Select(c => (string)c["id"]!).Distinct());
        Assert.Equal("assistant", (string)chunks[0]["choices"]![0]!["delta"]!["role"]!);
        var usageChunk = chunks[^1];
        Assert.Empty(usageChunk["choices"]!.AsArray());
        Assert.True((long)usageChunk["usage"]!["total_tokens"]! > (long)usageChunk["usage"]!["prompt_tokens"]!);
        var finishChunk = chunks[^2];
        Assert.Contains((string)finishChunk["choices"]![0]!["finish_reason"]!, new[] { "stop", "length" });
        Assert.All(chunks[..^1], c => Assert.Null(c["usage"]));
        // The streamed text equals the non-streamed answer.
        string streamed = string.Concat(chunks.Skip(1).Select(c => (string?)c["choices"]!.AsArray().FirstOrDefault()?["delta"]?["content"] ?? ""));
        body.Remove("stream"); body.Remove("stream_options");
        var (status, json, _) = await ServerTestHost.PostAsync(server, body.ToJsonString());
        Assert.Equal(200, status);
        Assert.Equal("chat.completion", (string)json!["object"]!);
        Assert.Equal((string)json["choices"]![0]!["message"]!["content"]!, streamed);

        Assert.Equal("ok", (string)JsonNode.Parse(await http.GetStringAsync("health"))!["status"]!);
        var models = JsonNode.Parse(await http.GetStringAsync("v1/models"))!;
        Assert.Equal("list", (string)models["object"]!);
        Assert.Equal(ServerTestHost.ModelName, (string)models["data"]![0]!["id"]!);
        var metrics = await http.GetStringAsync("metrics");
        Assert.Contains("# TYPE vchat_time_to_first_token_seconds histogram", metrics);
        Assert.Contains("vchat_requests_total 2", metrics);
    }

    [Fact]
    public async Task Errors_HaveOpenAIShapeAndStatus()
    {
        await using var server = await host.StartAsync(o => o with { ApiKey = ServerTestHost.Key, MaxImages = 3 });
        async Task<JsonNode> Expect(int status, string body, string? key = ServerTestHost.Key, string? param = null)
        {
            var (actual, json, _) = await ServerTestHost.PostAsync(server, body, key);
            Assert.True(status == actual, $"expected {status}, got {actual}: {json?.ToJsonString()}");
            var error = json!["error"]!;
            Assert.False(string.IsNullOrWhiteSpace((string)error["message"]!));
            Assert.NotNull((string?)error["type"]);
            if (param is not null) Assert.Equal(param, (string?)error["param"]);
            return error;
        }
        string Hi() => ServerTestHost.Body(ServerTestHost.User(ServerTestHost.TextPart("hi"))).ToJsonString();

        await Expect(400, "{\"model\": \"tiny-test\", \"messages\": [");
        await Expect(400, "[1, 2]");
        var temperature = ServerTestHost.Body(ServerTestHost.User(ServerTestHost.TextPart("hi")));
        temperature["temperature"] = "hot";
        await Expect(400, temperature.ToJsonString(), param: "temperature");
        var stream = ServerTestHost.Body(ServerTestHost.User(ServerTestHost.TextPart("hi")));
        stream["stream"] = "yes";
        await Expect(400, stream.ToJsonString(), param: "stream");
        var content = ServerTestHost.Body(new JsonObject { ["role"] = "user", ["content"] = 42 });
        await Expect(400, content.ToJsonString(), param: "messages[0].content");
        var n = ServerTestHost.Body(ServerTestHost.User(ServerTestHost.TextPart("hi")));
        n["n"] = 2;
        await Expect(400, n.ToJsonString(), param: "n");

        var four = ServerTestHost.Body(ServerTestHost.User(ServerTestHost.ImagePart(1), ServerTestHost.ImagePart(2)), ServerTestHost.Assistant("ok"),
            ServerTestHost.User(ServerTestHost.ImagePart(3), ServerTestHost.ImagePart(4), ServerTestHost.TextPart("?")));
        var tooMany = await Expect(400, four.ToJsonString());
        Assert.Equal("too_many_images", (string?)tooMany["code"]);
        Assert.Contains("3", (string)tooMany["message"]!);
        Assert.Contains("image 4", (string)tooMany["message"]!);

        var broken = ServerTestHost.Body(ServerTestHost.User(new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = "data:image/png;base64," + Convert.ToBase64String(Encoding.ASCII.GetBytes("not a png at all")) } }));
        Assert.Equal("invalid_image", (string?)(await Expect(400, broken.ToJsonString()))["code"]);
        var remote = ServerTestHost.Body(ServerTestHost.User(new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = "http://169.254.169.254/latest/meta-data" } }));
        Assert.Equal("remote_images_disabled", (string?)(await Expect(400, remote.ToJsonString()))["code"]);
        var local = ServerTestHost.Body(ServerTestHost.User(new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = "/etc/passwd" } }));
        Assert.Equal("local_images_disabled", (string?)(await Expect(400, local.ToJsonString()))["code"]);

        var longPrompt = ServerTestHost.Body(ServerTestHost.User(ServerTestHost.TextPart(string.Join(' ', Enumerable.Repeat("a long question about pictures", 600)))));
        Assert.Equal("context_length_exceeded", (string?)(await Expect(400, longPrompt.ToJsonString()))["code"]);

        Assert.Equal("invalid_api_key", (string?)(await Expect(401, Hi(), key: null))["code"]);
        Assert.Equal("invalid_api_key", (string?)(await Expect(401, Hi(), key: "wrong"))["code"]);
        var wrongModel = ServerTestHost.Body(ServerTestHost.User(ServerTestHost.TextPart("hi")));
        wrongModel["model"] = "gpt-4o";
        Assert.Equal("model_not_found", (string?)(await Expect(404, wrongModel.ToJsonString()))["code"]);

        // A bad request never disturbs the server: the next good one is answered.
        var (ok, json, _) = await ServerTestHost.PostAsync(server, Hi(), ServerTestHost.Key);
        Assert.Equal(200, ok);
        Assert.Equal("chat.completion", (string)json!["object"]!);
    }

    [Fact]
    public async Task FullQueue_Is429WithRetryAfter()
    {
        await using var server = await host.StartAsync(o => o with { MaxBatch = 1, MaxQueue = 0 });
        var permits = new SemaphoreSlim(0);
        server.Scheduler.StepPermits = permits;   // the scheduler holds still: the first request keeps its slot
        string body = ServerTestHost.Body(ServerTestHost.User(ServerTestHost.TextPart("hi"))).ToJsonString();
        var first = ServerTestHost.PostAsync(server, body);
        await WaitUntil(() => server.Metrics.ToPrometheus().Contains("vchat_queue_depth 1"));
        var (status, json, response) = await ServerTestHost.PostAsync(server, body);
        Assert.Equal(429, status);
        Assert.Equal("queue_full", (string?)json!["error"]!["code"]);
        Assert.True(response.Headers.RetryAfter is not null, "429 carries Retry-After");
        server.Scheduler.StepPermits = null;
        permits.Release(1000);
        Assert.Equal(200, (await first).Status);
    }

    [Fact]
    public async Task ClientDisconnect_CancelsItsSequenceAndFreesTheSlot()
    {
        await using var server = await host.StartAsync(o => o with { MaxBatch = 1, MaxQueue = 0 });
        var permits = new SemaphoreSlim(0);
        server.Scheduler.StepPermits = permits;
        var body = ServerTestHost.Body(ServerTestHost.User(ServerTestHost.TextPart("tell a long story")));
        body["max_tokens"] = 500;
        body["stream"] = true;
        // No draining of the unread response: disposing it must close the connection, as a browser's abort does.
        var http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = server.BaseAddress };
        using var cts = new CancellationTokenSource();
        var send = http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") },
            HttpCompletionOption.ResponseHeadersRead, cts.Token);
        // Admit and prefill, then a few decode steps: the stream has started.
        while (!send.IsCompleted) {
            permits.Release();
            await Task.WhenAny(send, Task.Delay(20));
        }
        using (var response = await send) {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            permits.Release(3);
            cts.Cancel();
        }
        http.Dispose();
        // One step at a time, slowly: the 500 tokens would take far longer than the server needs to see the disconnect.
        await WaitUntil(() => {
            permits.Release();
            Thread.Sleep(5);
            return server.Metrics.ToPrometheus().Contains("vchat_requests_cancelled_total 1");
        });
        server.Scheduler.StepPermits = null;
        var metrics = server.Metrics.ToPrometheus();
        long generated = long.Parse(metrics.Split('\n').First(l => l.StartsWith("vchat_completion_tokens_total ")).Split(' ')[1]);
        Assert.True(generated < 500, $"the cancelled sequence stopped early ({generated} tokens)");
        // Its slot is free: with one slot and no queue, a new request is served.
        var (status, _, _) = await ServerTestHost.PostAsync(server, ServerTestHost.Body(ServerTestHost.User(ServerTestHost.TextPart("hi"))).ToJsonString());
        Assert.Equal(200, status);
    }

    static async Task WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition()) {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("The server did not reach the expected state within 30 s.");
            await Task.Delay(20);
        }
    }
}
