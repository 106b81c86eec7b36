using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using VisualChat.Model;
using VisualChat.Server;
using VisualChat.Tests.Chat;

namespace VisualChat.Tests.Server;

/// <summary>The tiny VisualChat preset in a temp folder and helpers to start servers on free loopback ports over it.</summary>
public sealed class ServerTestHost : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "vchat-server-tests-" + Guid.NewGuid().ToString("N"));
    public string ModelFolder => Path.Combine(Root, "model");
    public const string ModelName = "tiny-test";
    public const string Key = "test-key-123";

    public ServerTestHost()
    {
        Directory.CreateDirectory(Root);
        using var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 5);
        model.Save(ModelFolder);
    }

    public Task<VisualChatServer> StartAsync(Func<ServerOptions, ServerOptions>? configure = null)
    {
        var options = new ServerOptions { ModelFolder = ModelFolder, ModelName = ModelName, Port = 0, DefaultMaxTokens = 12 };
        return VisualChatServer.StartAsync(configure is null ? options : configure(options));
    }

    public static string DataUri(byte[] png) => "data:image/png;base64," + Convert.ToBase64String(png);

    public static JsonObject ImagePart(int seed) => new() { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = DataUri(ChatTestModel.Png(seed)) } };
    public static JsonObject TextPart(string text) => new() { ["type"] = "text", ["text"] = text };
    public static JsonObject User(params JsonNode[] parts) => new() { ["role"] = "user", ["content"] = new JsonArray(parts) };
    public static JsonObject Assistant(string text) => new() { ["role"] = "assistant", ["content"] = text };

    public static JsonObject Body(params JsonObject[] messages) => new() { ["model"] = ModelName, ["messages"] = new JsonArray(messages), ["max_tokens"] = 10 };

    public static async Task<(int Status, JsonNode? Json, HttpResponseMessage Response)> PostAsync(VisualChatServer server, string body, string? key = null, CancellationToken cancellationToken = default)
    {
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        if (key is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        var response = await http.SendAsync(request, cancellationToken);
        string text = await response.Content.ReadAsStringAsync(cancellationToken);
        JsonNode? json = null;
        try { json = JsonNode.Parse(text); } catch (System.Text.Json.JsonException) { }
        return ((int)response.StatusCode, json, response);
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}
