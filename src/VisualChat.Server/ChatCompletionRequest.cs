using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;

namespace VisualChat.Server;

/// <summary>An image of a chat request: its decoded pixels, where it came from and a hash of its bytes (what the
/// conversation cache compares).</summary>
public sealed record RequestImage(string Source, RgbImage Image, string Hash);

/// <summary>One round of a chat request: the user's text and new images, and the assistant's answer when the
/// client sends it back (earlier rounds).</summary>
public sealed class RequestRound
{
    public string Question { get; set; } = "";
    public List<RequestImage> Images { get; } = [];
    public string? Answer { get; set; }
}

/// <summary>
/// A parsed <c>POST /v1/chat/completions</c> body. Every rule of OpenAI's API this server honours is checked here, and
/// each violation is a 400 naming the field: unknown fields are ignored (clients send many), known fields of the wrong
/// type are refused.
/// </summary>
public sealed class ChatCompletionRequest
{
    public string Model { get; private set; } = "";
    public string? System { get; private set; }
    public List<RequestRound> Rounds { get; } = [];
    public int? MaxTokens { get; private set; }
    public double? Temperature { get; private set; }
    public double? TopP { get; private set; }
    public long? Seed { get; private set; }
    public List<string> Stop { get; } = [];
    public bool Stream { get; private set; }
    public bool IncludeUsage { get; private set; }
    public int ImageCount => Rounds.Sum(r => r.Images.Count);

    /// <summary>Where images come from; decoding is here so a bad image is a 400 before the request queues.</summary>
    public sealed record ImagePolicy(int MaxImages, string? ImageRoot, bool AllowRemote, HttpClient? Http);

    public static async Task<ChatCompletionRequest> ParseAsync(Stream body, ImagePolicy images, CancellationToken cancellationToken)
    {
        JsonNode? root;
        try { root = await JsonNode.ParseAsync(body, cancellationToken: cancellationToken).ConfigureAwait(false); }
        catch (JsonException e) { throw ApiException.BadRequest($"The request body is not valid JSON: {e.Message}"); }
        if (root is not JsonObject obj) throw ApiException.BadRequest("The request body must be a JSON object.");

        var request = new ChatCompletionRequest { Model = RequiredString(obj, "model") };
        request.MaxTokens = OptionalInt(obj, "max_completion_tokens") ?? OptionalInt(obj, "max_tokens");
        if (request.MaxTokens is < 1) throw ApiException.BadRequest($"max_tokens must be ≥ 1 (got {request.MaxTokens}).", "max_tokens");
        request.Temperature = OptionalNumber(obj, "temperature");
        if (request.Temperature is < 0 or > 2) throw ApiException.BadRequest($"temperature must be in [0, 2] (got {request.Temperature}).", "temperature");
        request.TopP = OptionalNumber(obj, "top_p");
        if (request.TopP is { } p && !(p > 0 && p <= 1)) throw ApiException.BadRequest($"top_p must be in (0, 1] (got {p}).", "top_p");
        request.Seed = OptionalLong(obj, "seed");
        if (OptionalInt(obj, "n") is { } n && n != 1) throw ApiException.BadRequest($"n must be 1 (got {n}); this server returns one choice per request.", "n");
        request.Stream = OptionalBool(obj, "stream") ?? false;
        if (obj["stream_options"] is { } so) {
            if (so is not JsonObject streamOptions) throw ApiException.BadRequest("stream_options must be an object.", "stream_options");
            request.IncludeUsage = OptionalBool(streamOptions, "include_usage", "stream_options.include_usage") ?? false;
        }
        switch (obj["stop"]) {
            case null: break;
            case JsonValue v when v.TryGetValue<string>(out var s): request.Stop.Add(s); break;
            case JsonArray a:
                foreach (var item in a)
                    request.Stop.Add(item is JsonValue iv && iv.TryGetValue<string>(out var t) ? t : throw ApiException.BadRequest("stop must be a string or an array of strings.", "stop"));
                break;
            default: throw ApiException.BadRequest("stop must be a string or an array of strings.", "stop");
        }
        if (request.Stop.Count > 4) throw ApiException.BadRequest($"stop takes at most 4 sequences (got {request.Stop.Count}).", "stop");
        if (request.Stop.Any(string.IsNullOrEmpty)) throw ApiException.BadRequest("stop sequences must not be empty.", "stop");

        if (obj["messages"] is not JsonArray messages) throw ApiException.BadRequest("messages must be an array of messages.", "messages");
        if (messages.Count == 0) throw ApiException.BadRequest("messages must not be empty.", "messages");
        RequestRound? open = null;
        for (int i = 0; i < messages.Count; i++) {
            string where = $"messages[{i}]";
            if (messages[i] is not JsonObject message) throw ApiException.BadRequest($"{where} must be an object.", where);
            string role = RequiredString(message, "role", $"{where}.role");
            switch (role) {
                case "system" or "developer":
                    var systemText = TextOnly(message["content"], $"{where}.content");
                    request.System = request.System is null ? systemText : request.System + "\n" + systemText;
                    break;
                case "user":
                    if (open is null) { open = new RequestRound(); request.Rounds.Add(open); }
                    await AddUserContentAsync(open, message["content"], $"{where}.content", request, images, cancellationToken).ConfigureAwait(false);
                    break;
                case "assistant":
                    if (open is null) throw ApiException.BadRequest($"{where} is an assistant message without a user message before it.", where);
                    open.Answer = message["content"] is null ? "" : TextOnly(message["content"], $"{where}.content");
                    open = null;
                    break;
                default:
                    throw ApiException.BadRequest($"{where}.role '{role}' is not supported; use system, user or assistant.", $"{where}.role");
            }
        }
        if (open is null) throw ApiException.BadRequest("The last message must be a user message (the question to answer).", "messages");
        return request;
    }

    static async Task AddUserContentAsync(RequestRound round, JsonNode? content, string where, ChatCompletionRequest request, ImagePolicy policy, CancellationToken cancellationToken)
    {
        if (content is JsonValue v && v.TryGetValue<string>(out var text)) {
            AppendText(round, text);
            return;
        }
        if (content is not JsonArray parts) throw ApiException.BadRequest($"{where} must be a string or an array of content parts.", where);
        for (int p = 0; p < parts.Count; p++) {
            string partWhere = $"{where}[{p}]";
            if (parts[p] is not JsonObject part) throw ApiException.BadRequest($"{partWhere} must be an object.", partWhere);
            string type = RequiredString(part, "type", $"{partWhere}.type");
            if (type == "text") {
                AppendText(round, RequiredString(part, "text", $"{partWhere}.text"));
            } else if (type == "image_url") {
                string url = part["image_url"] switch {
                    JsonObject o => RequiredString(o, "url", $"{partWhere}.image_url.url"),
                    JsonValue s when s.TryGetValue<string>(out var u) => u,
                    _ => throw ApiException.BadRequest($"{partWhere}.image_url must be an object with a url.", $"{partWhere}.image_url"),
                };
                int count = request.ImageCount + 1;
                if (count > policy.MaxImages)
                    throw ApiException.BadRequest($"The conversation has more than {policy.MaxImages} images ({partWhere} would be image {count}); this server allows {policy.MaxImages} per conversation (--max-images).", partWhere, "too_many_images");
                var bytes = await ReadImageAsync(url, partWhere, policy, cancellationToken).ConfigureAwait(false);
                RgbImage image;
                try { image = ImageLoader.Load(bytes, partWhere); }
                catch (Exception e) when (e is not OperationCanceledException) {
                    throw ApiException.BadRequest($"{partWhere} (image {count}) does not decode as PNG, JPEG, GIF or BMP: {e.Message}", partWhere, "invalid_image");
                }
                round.Images.Add(new RequestImage(url.StartsWith("data:", StringComparison.Ordinal) ? $"image {count}" : url, image, Convert.ToHexString(SHA256.HashData(bytes))));
            } else {
                throw ApiException.BadRequest($"{partWhere}.type '{type}' is not supported; use text or image_url.", $"{partWhere}.type");
            }
        }
    }

    static async Task<byte[]> ReadImageAsync(string url, string where, ImagePolicy policy, CancellationToken cancellationToken)
    {
        if (url.StartsWith("data:", StringComparison.OrdinalIgnoreCase)) {
            int comma = url.IndexOf(',');
            if (comma < 0 || !url.AsSpan(0, comma).EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
                throw ApiException.BadRequest($"{where}: a data URI image must be 'data:image/...;base64,<data>'.", where, "invalid_image");
            try { return Convert.FromBase64String(url[(comma + 1)..]); }
            catch (FormatException) { throw ApiException.BadRequest($"{where}: the data URI's base64 payload is not valid base64.", where, "invalid_image"); }
        }
        if (url.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("https://", StringComparison.OrdinalIgnoreCase)) {
            if (!policy.AllowRemote || policy.Http is null)
                throw ApiException.BadRequest($"{where}: this server does not fetch http(s) image URLs (start it with --allow-remote-images); send the image as a data: URI.", where, "remote_images_disabled");
            try {
                using var response = await policy.Http.GetAsync(url, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
                response.EnsureSuccessStatusCode();
                if (response.Content.Headers.ContentLength > 32 << 20) throw ApiException.BadRequest($"{where}: the image at {url} is larger than 32 MB.", where, "invalid_image");
                return await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
            } catch (HttpRequestException e) {
                throw ApiException.BadRequest($"{where}: cannot download {url}: {e.Message}", where, "invalid_image");
            }
        }
        if (policy.ImageRoot is null)
            throw ApiException.BadRequest($"{where}: local image paths are refused unless the server is started with --image-root; send the image as a data: URI.", where, "local_images_disabled");
        string path = url.StartsWith("file://", StringComparison.OrdinalIgnoreCase) ? new Uri(url).LocalPath : url;
        string root = Path.GetFullPath(policy.ImageRoot).TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar;
        string full = Path.GetFullPath(Path.IsPathRooted(path) ? path : Path.Combine(root, path));
        if (!full.StartsWith(root, StringComparison.Ordinal))
            throw ApiException.BadRequest($"{where}: {path} is outside --image-root {policy.ImageRoot}.", where, "invalid_image");
        if (!File.Exists(full)) throw ApiException.BadRequest($"{where}: image file {path} does not exist under --image-root.", where, "invalid_image");
        return await File.ReadAllBytesAsync(full, cancellationToken).ConfigureAwait(false);
    }

    static void AppendText(RequestRound round, string text)
    {
        if (text.Length == 0) return;
        round.Question = round.Question.Length == 0 ? text : round.Question + "\n" + text;
    }

    static string TextOnly(JsonNode? content, string where)
    {
        if (content is JsonValue v && v.TryGetValue<string>(out var text)) return text;
        if (content is JsonArray parts) {
            var texts = new List<string>();
            for (int p = 0; p < parts.Count; p++) {
                if (parts[p] is not JsonObject part || part["type"]?.GetValueKind() != JsonValueKind.String || (string)part["type"]! != "text")
                    throw ApiException.BadRequest($"{where}[{p}] must be a text part (only user messages carry images).", $"{where}[{p}]");
                texts.Add(RequiredString(part, "text", $"{where}[{p}].text"));
            }
            return string.Join("\n", texts);
        }
        throw ApiException.BadRequest($"{where} must be a string or an array of text parts.", where);
    }

    static string RequiredString(JsonObject obj, string name, string? where = null) =>
        obj[name] is JsonValue v && v.TryGetValue<string>(out var s) ? s
        : throw ApiException.BadRequest(obj.ContainsKey(name) ? $"{where ?? name} must be a string." : $"{where ?? name} is required.", where ?? name);

    static bool? OptionalBool(JsonObject obj, string name, string? where = null) => obj[name] switch {
        null => null,
        JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
        _ => throw ApiException.BadRequest($"{where ?? name} must be a boolean.", where ?? name),
    };

    static double? OptionalNumber(JsonObject obj, string name) => obj[name] switch {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number => v.GetValue<double>(),
        _ => throw ApiException.BadRequest($"{name} must be a number.", name),
    };

    static long? OptionalLong(JsonObject obj, string name) => obj[name] switch {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<long>(out var l) => l,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number && double.TryParse(v.ToJsonString(), global::System.Globalization.CultureInfo.InvariantCulture, out var d) && d == Math.Floor(d) && Math.Abs(d) < 9e18 => (long)d,
        _ => throw ApiException.BadRequest($"{name} must be an integer.", name),
    };

    static int? OptionalInt(JsonObject obj, string name) => OptionalLong(obj, name) switch {
        null => null,
        { } l when l is >= int.MinValue and <= int.MaxValue => (int)l,
        _ => throw ApiException.BadRequest($"{name} is out of range.", name),
    };
}
