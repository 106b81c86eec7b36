using System.CommandLine;
using System.Globalization;
using VisualChat.Model;
using VisualChat.Server;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat bench serve --model DIR</c>: loopback load on the chat server (see <see cref="ServeBenchmark"/>),
/// with the conversation cache on, and round 3 again with it off, in the same run.</summary>
public static class BenchServeCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "VisualChat model folder to serve (default: a random model built with --lm-shape in a temp folder)." };
        var lmShape = new Option<string>("--lm-shape") { Description = "Without --model: tiny (the tiny preset) or llama-100m (tiny CLIP + a LLaMA of llama-100m's shapes with the tiny tokenizer's vocabulary).", DefaultValueFactory = _ => "tiny" };
        var concurrency = new Option<string>("--concurrency") { Description = "Comma-separated numbers of concurrent conversations.", DefaultValueFactory = _ => "1,4,16" };
        var rounds = new Option<int>("--rounds") { Description = "Rounds per conversation.", DefaultValueFactory = _ => 3 };
        var images = new Option<int>("--images") { Description = "Images per conversation (sent in round 1).", DefaultValueFactory = _ => 2 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Tokens per answer.", DefaultValueFactory = _ => 32 };
        var kvCacheMb = new Option<int>("--kv-cache-mb") { Description = "The server's conversation-cache budget (MiB); the default holds every conversation of a default run (the llama-100m shape needs ≈ 0.8 GB), so reuse is measured without evictions; the output reports evictions.", DefaultValueFactory = _ => 4096 };
        var command = new Command("serve", "Aggregate tokens/s, TTFT and inter-token latency of `vchat serve` under concurrent multi-image conversations, and round-3 TTFT with vs without KV reuse")
        {
            model, lmShape, concurrency, rounds, images, maxTokens, kvCacheMb,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            try
            {
                var levels = parse.GetValue(concurrency)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
                if (levels.Length == 0 || levels.Any(l => l < 1)) throw new ArgumentException("--concurrency: give positive numbers, e.g. 1,4,16.");
                int roundCount = parse.GetValue(rounds), imageCount = parse.GetValue(images), tokens = parse.GetValue(maxTokens);
                if (roundCount < 3) throw new ArgumentException("--rounds must be ≥ 3 (round 3 is compared with and without KV reuse).");
                string? folder = parse.GetValue(model);
                string? temp = null;
                if (folder is null)
                {
                    temp = Path.Combine(Path.GetTempPath(), "vchat-bench-serve-" + Guid.NewGuid().ToString("N"));
                    folder = Path.Combine(temp, parse.GetValue(lmShape)!);
                    using var built = BuildModel(parse.GetValue(lmShape)!);
                    built.Save(folder);
                    stderr.WriteLine($"bench serve: built a random {parse.GetValue(lmShape)} model ({built.LmConfig.ParameterCount() / 1e6:F1}M LM parameters) in {folder}");
                }
                try
                {
                var options = new ServerOptions { ModelFolder = folder, Port = 0, MaxBatch = levels.Max(), MaxQueue = levels.Max(), KvCacheMb = parse.GetValue(kvCacheMb) };
                IReadOnlyList<ServeBenchmarkRow> warm, cold;
                string reuse;
                await using (var server = await VisualChatServer.StartAsync(options, cancellationToken))
                {
                    stderr.WriteLine($"bench serve: {server.ModelName}, KV reuse on, concurrency {string.Join(", ", levels)} × {roundCount} rounds × {imageCount} images, {tokens} tokens per answer");
                    warm = await ServeBenchmark.RunAsync(server, levels, roundCount, imageCount, tokens, seed: 1000, cancellationToken);
                    var metrics = server.Metrics;
                    reuse = $"prompt positions reused {metrics.PositionsReused}, prefilled {metrics.PositionsPrefilled}; conversation-cache evictions {Interlocked.Read(ref metrics.CacheEvictions)}";
                }
                await using (var server = await VisualChatServer.StartAsync(options with { KvCacheMb = 0 }, cancellationToken))
                {
                    stderr.WriteLine("bench serve: KV reuse off, concurrency 1");
                    cold = await ServeBenchmark.RunAsync(server, [1], roundCount, imageCount, tokens, seed: 1000, cancellationToken);
                }
                static string Ms(double s) => double.IsNaN(s) ? "-" : (s * 1000).ToString("F1", CultureInfo.InvariantCulture);
                stdout.WriteLine("| concurrent conversations | requests | errors | aggregate tokens/s | × of 1 | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | round-3 TTFT p50 ms |");
                stdout.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
                double baseline = warm[0].TokensPerSecond;
                foreach (var row in warm)
                    stdout.WriteLine($"| {row.Concurrency} | {row.Requests} | {row.Errors} | {row.TokensPerSecond:F1} | {row.TokensPerSecond / baseline:F2} | {Ms(row.TtftP50)} | {Ms(row.TtftP99)} | {Ms(row.ItlP50)} | {Ms(row.ItlP99)} | {Ms(row.Round3TtftP50)} |");
                var warm1 = warm.First(r => r.Concurrency == warm[0].Concurrency);
                stdout.WriteLine();
                stdout.WriteLine($"With KV reuse (all levels): {reuse}.");
                stdout.WriteLine($"Round-3 TTFT at concurrency {warm1.Concurrency}: {Ms(warm1.Round3TtftP50)} ms with KV reuse, {Ms(cold[0].Round3TtftP50)} ms without → ratio {warm1.Round3TtftP50 / cold[0].Round3TtftP50:F2} (errors without reuse: {cold[0].Errors}).");
                return warm.Sum(r => r.Errors) + cold.Sum(r => r.Errors) == 0 ? 0 : 1;
                }
                finally
                {
                    if (temp is not null) try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
                }
            }
            catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or FormatException or HttpRequestException)
            {
                stderr.WriteLine($"vchat bench serve: {e.Message}");
                return 1;
            }
        });
        return command;
    }

    static VisualChatModel BuildModel(string shape)
    {
        var tiny = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 3);
        if (shape == "tiny") return tiny;
        if (shape != "llama-100m") { tiny.Dispose(); throw new ArgumentException($"--lm-shape must be tiny or llama-100m (got '{shape}')."); }
        var lm = tiny.LmConfig;
        var config = new LlamaConfig {
            VocabSize = lm.VocabSize, HiddenSize = 768, IntermediateSize = 2048, NumHiddenLayers = 12, NumAttentionHeads = 12,
            MaxPositionEmbeddings = 2048, RmsNormEps = 1e-6, TieWordEmbeddings = true, BosTokenId = lm.BosTokenId, EosTokenId = lm.EosTokenId,
        };
        var model = new VisualChatModel(tiny.Config, config, seed: 3) { Tokenizer = tiny.Tokenizer };
        tiny.Dispose();
        return model;
    }
}
