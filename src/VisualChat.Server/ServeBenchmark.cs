using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using VisualChat.Conversations;

namespace VisualChat.Server;

/// <summary>Measurements of one concurrency level of <see cref="ServeBenchmark"/>.</summary>
public sealed record ServeBenchmarkRow(int Concurrency, int Requests, int Errors, long Tokens, double Seconds,
    double TtftP50, double TtftP99, double ItlP50, double ItlP99, double Round3TtftP50)
{
    public double TokensPerSecond => Seconds > 0 ? Tokens / Seconds : 0;
}

/// <summary>
/// <c>vchat bench serve</c>: a bounded load generator on loopback. For each concurrency level, that many conversations
/// run at once, each of <c>rounds</c> streamed rounds with its images in round 1 (each round sends the whole
/// conversation, as OpenAI clients do). Time to first token is measured from sending to the first SSE chunk carrying
/// the first SSE chunk (sent when the first token is sampled); inter-token latency between content chunks (text chunks: a detokenizer holding incomplete UTF-8 merges tokens into one chunk).
/// One unmeasured conversation warms the server up first.
/// </summary>
public static class ServeBenchmark
{
    public static async Task<IReadOnlyList<ServeBenchmarkRow>> RunAsync(VisualChatServer server, IReadOnlyList<int> concurrencies, int rounds, int images, int maxTokens, int seed, CancellationToken cancellationToken = default)
    {
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromMinutes(30) };
        var rows = new List<ServeBenchmarkRow>();
        int conversationSeed = seed;
        await RunLevel(1, rounds: 1).ConfigureAwait(false);   // warm-up (JIT, first allocations), not reported
        foreach (int concurrency in concurrencies) rows.Add(await RunLevel(concurrency, rounds).ConfigureAwait(false));
        return rows;

        async Task<ServeBenchmarkRow> RunLevel(int concurrency, int rounds)
        {
            var ttft = new List<double>();
            var itl = new List<double>();
            var round3 = new List<double>();
            long tokens = 0;
            int errors = 0, requests = 0;
            var clock = Stopwatch.StartNew();
            var tasks = Enumerable.Range(0, concurrency).Select(c => Conversation(conversationSeed + c)).ToArray();
            conversationSeed += concurrency;
            await Task.WhenAll(tasks).ConfigureAwait(false);
            double seconds = clock.Elapsed.TotalSeconds;
            return new ServeBenchmarkRow(concurrency, requests, errors, tokens, seconds,
                Percentile(ttft, 0.5), Percentile(ttft, 0.99), Percentile(itl, 0.5), Percentile(itl, 0.99), Percentile(round3, 0.5));

            async Task Conversation(int id)
            {
                var messages = new JsonArray();
                for (int round = 1; round <= rounds; round++) {
                    var content = new JsonArray();
                    if (round == 1)
                    {
                        for (int i = 0; i < images; i++)
                            content.Add(new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = "data:image/bmp;base64," + Convert.ToBase64String(Bmp(id * 31 + i, 48)) } });
                    }

                    content.Add(new JsonObject { ["type"] = "text", ["text"] = round == 1 ? "Describe what differs between Image 1 and Image 2." : $"Round {round}: tell me more about Image {1 + round % Math.Max(images, 1)}." });
                    messages.Add(new JsonObject { ["role"] = "user", ["content"] = content });
                    var body = new JsonObject {
                        ["model"] = server.ModelName, ["messages"] = messages.DeepClone(), ["max_tokens"] = maxTokens, ["stream"] = true,
                        ["stream_options"] = new JsonObject { ["include_usage"] = true }, ["temperature"] = 0,
                    };
                    var (answer, first, gaps, completion, ok) = await StreamOnce(http, body.ToJsonString(), cancellationToken).ConfigureAwait(false);
                    lock (ttft) {
                        requests++;
                        if (!ok) { errors++; return; }
                        tokens += completion;
                        ttft.Add(first);
                        itl.AddRange(gaps);
                        if (round == 3) round3.Add(first);
                    }
                    messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = answer });
                }
            }
        }
    }

    static async Task<(string Answer, double Ttft, List<double> Gaps, long Tokens, bool Ok)> StreamOnce(HttpClient http, string body, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode) return ("", 0, [], 0, false);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false));
        var answer = new StringBuilder();
        double? first = null;
        long last = 0, tokens = 0;
        var gaps = new List<double>();
        bool done = false;
        while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line) {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            string data = line[6..];
            if (data == "[DONE]") { done = true; break; }
            var chunk = JsonNode.Parse(data)!;
            if (chunk["error"] is not null) return (answer.ToString(), 0, gaps, 0, false);
            if (chunk["usage"] is JsonObject usage) tokens = (long)usage["completion_tokens"]!;
            long now = Stopwatch.GetTimestamp();
            // The server sends the first chunk (role) when the first token is sampled.
            if (first is null) { first = Stopwatch.GetElapsedTime(start, now).TotalSeconds; last = now; }
            if (chunk["choices"] is not JsonArray { Count: > 0 } choices) continue;
            string? delta = (string?)choices[0]!["delta"]?["content"];
            if (string.IsNullOrEmpty(delta)) continue;
            gaps.Add(Stopwatch.GetElapsedTime(last, now).TotalSeconds);
            last = now;
            answer.Append(delta);
        }
        return (answer.ToString(), first ?? 0, gaps, tokens, done && first is not null);
    }

    static double Percentile(List<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.OrderBy(v => v).ToArray();
        return sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
    }

    /// <summary>A 24-bit BMP of smooth colour gradients that depend on <paramref name="seed"/>.</summary>
    public static byte[] Bmp(int seed, int size)
    {
        int rowBytes = (size * 3 + 3) & ~3;
        var bytes = new byte[54 + rowBytes * size];
        void I32(int at, int v) => BitConverter.TryWriteBytes(bytes.AsSpan(at), v);
        bytes[0] = (byte)'B'; bytes[1] = (byte)'M';
        I32(2, bytes.Length); I32(10, 54); I32(14, 40); I32(18, size); I32(22, size);
        bytes[26] = 1; bytes[28] = 24; I32(34, rowBytes * size);
        var random = new Random(seed);
        int r0 = random.Next(256), g0 = random.Next(256), b0 = random.Next(256);
        for (int y = 0; y < size; y++)
        {
            for (int x = 0; x < size; x++) {
                int at = 54 + y * rowBytes + x * 3;
                bytes[at] = (byte)(b0 + 3 * x);
                bytes[at + 1] = (byte)(g0 + 3 * y);
                bytes[at + 2] = (byte)(r0 + x + y);
            }
        }

        return bytes;
    }
}
