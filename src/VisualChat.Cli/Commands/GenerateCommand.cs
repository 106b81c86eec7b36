using System.CommandLine;
using System.Diagnostics;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat generate --model DIR --prompt TEXT</c>: streams a continuation to stdout, timing to stderr.</summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder: config.json, weights and tokenizer.", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue (BOS is added).", Required = true };
        var maxNewTokens = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate.", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy.", DefaultValueFactory = _ => 0 };
        var topK = new Option<int>("--top-k") { Description = "Keep the k most likely tokens (0 = off).", DefaultValueFactory = _ => 0 };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling threshold (1 = off).", DefaultValueFactory = _ => 1.0 };
        var repetitionPenalty = new Option<double>("--repetition-penalty") { Description = "HF repetition penalty (1 = off).", DefaultValueFactory = _ => 1.0 };
        var stop = new Option<string[]>("--stop") { Description = "Stop once the continuation contains this text (repeatable).", AllowMultipleArgumentsPerToken = false };
        var seed = new Option<ulong>("--seed") { Description = "Sampling seed.", DefaultValueFactory = _ => 42 };
        var dtype = new Option<string?>("--dtype") { Description = "Compute dtype (f32, bf16, f16); CPU computes in f32 regardless." };
        var command = new Command("generate", "Generate text with a language model folder, streaming tokens as they come")
        {
            model, prompt, maxNewTokens, temperature, topK, topP, repetitionPenalty, stop, seed, dtype,
        };
        command.SetAction(parse =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            string folder = parse.GetValue(model)!;
            try
            {
                var options = new GenerationOptions
                {
                    MaxNewTokens = parse.GetValue(maxNewTokens),
                    Temperature = parse.GetValue(temperature),
                    TopK = parse.GetValue(topK),
                    TopP = parse.GetValue(topP),
                    RepetitionPenalty = parse.GetValue(repetitionPenalty),
                    StopStrings = parse.GetValue(stop) ?? [],
                    Seed = parse.GetValue(seed),
                };
                options.Validate();
                string? dtypeName = parse.GetValue(dtype);
                var loading = Stopwatch.StartNew();
                var (lm, tokenizer) = LanguageModelFolder.Load(folder, dtype: dtypeName is null ? null : DevicePolicy.ParseDType(dtypeName));
                // Load time includes the manifest's SHA-256 check of the weights (folders this tool wrote); the weights
                // themselves are memory-mapped where their stored dtype is the compute dtype, and read on first use.
                stderr.WriteLine($"[loaded {folder} in {loading.Elapsed.TotalSeconds:F1} s{(lm.IsQuantized ? ", q8 weights" : "")}]");
                DevicePolicy.ConfigureCpuThreads(lm.Config.ParameterCount());
                using var _ = lm;
                var promptIds = tokenizer.Encode(parse.GetValue(prompt)!, addBos: true);
                var clock = Stopwatch.StartNew();
                double firstTokenSeconds = 0;
                int count = 0;
                // The engine streams text deltas (UTF-8 complete, stop strings held back and cut), after the prompt's text.
                var result = TextGenerator.Generate(lm, tokenizer, promptIds, options,
                    onToken: _ => { if (count++ == 0) firstTokenSeconds = clock.Elapsed.TotalSeconds; },
                    onText: delta => { stdout.Write(delta); stdout.Flush(); });
                double total = clock.Elapsed.TotalSeconds;
                stdout.WriteLine();
                double decodeRate = count > 1 ? (count - 1) / Math.Max(total - firstTokenSeconds, 1e-9) : 0;
                stderr.WriteLine($"[{count} tokens ({result.FinishReason}), prompt {promptIds.Count} tokens, time to first token {firstTokenSeconds * 1000:F0} ms, " +
                                 $"{decodeRate:F1} tokens/s after the first, {total:F2} s total]");
                return 0;
            }
            catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or UnauthorizedAccessException)
            {
                stderr.WriteLine($"vchat generate: {e.Message}");
                return 1;
            }
        });
        return command;
    }
}
