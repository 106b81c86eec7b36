using System.CommandLine;
using VisualChat.Benchmarks;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat bench …</c>: measurements that print a table and a ratio to a baseline measured in the same run.</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var bench = new Command("bench", "Benchmarks; each reports ratios against a baseline measured in the same run.");
        bench.Subcommands.Add(Attention());
        bench.Subcommands.Add(BenchPreprocessCommand.Create());
        bench.Subcommands.Add(BenchVisionCommand.Create());
        bench.Subcommands.Add(BenchAblationCommand.Create());
        bench.Subcommands.Add(Decode());
        bench.Subcommands.Add(BenchServeCommand.Create());
        bench.Subcommands.Add(TrainCommand.CreateBench());
        return bench;
    }

    static Command Attention()
    {
        var lengths = new Option<long[]>("--lengths") { Description = "Sequence lengths.", DefaultValueFactory = _ => [1024, 2048, 4096], AllowMultipleArgumentsPerToken = true };
        var images = new Option<int>("--images") { Description = "Images per sequence.", DefaultValueFactory = _ => 4 };
        var imageTokens = new Option<int>("--image-tokens") { Description = "Tokens per image.", DefaultValueFactory = _ => 256 };
        var heads = new Option<int>("--heads") { Description = "Attention heads.", DefaultValueFactory = _ => 16 };
        var headDim = new Option<int>("--head-dim") { Description = "Head width.", DefaultValueFactory = _ => 64 };
        var repeats = new Option<int>("--repeats") { Description = "Timed repetitions (best is reported) after one warm-up.", DefaultValueFactory = _ => 3 };
        var noDense = new Option<bool>("--no-dense") { Description = "Skip the dense MMCA reference (it needs several L² buffers)." };
        var command = new Command("attention", "Forward+backward time and peak memory of MMCA vs causal attention (and the dense MMCA reference).")
        {
            lengths, images, imageTokens, heads, headDim, repeats, noDense,
        };
        command.SetAction(parse =>
        {
            Console.WriteLine($"machine: {MachineInfo.Current()}");
            Console.WriteLine($"batch 1, {parse.GetValue(heads)} heads × {parse.GetValue(headDim)}, fp32, {parse.GetValue(images)} images × {parse.GetValue(imageTokens)} tokens spread through the text (at most half of a sequence is image tokens)");
            Console.WriteLine($"{"kernel",-12} {"L",6} {"images",7} {"fwd+bwd ms",11} {"× causal",9} {"peak extra MiB",15}");
            foreach (var row in AttentionBenchmark.Run(parse.GetValue(lengths)!, parse.GetValue(images), parse.GetValue(imageTokens),
                         parse.GetValue(heads), parse.GetValue(headDim), parse.GetValue(repeats), !parse.GetValue(noDense)))
            {
                Console.WriteLine($"{row.Kernel,-12} {row.SequenceLength,6} {row.Images,7} {row.ForwardBackwardMs,11:F1} {row.RatioToCausal,9:F2} {row.PeakExtraMiB,15:F1}");
            }

            return 0;
        });
        return command;
    }

    static Command Decode()
    {
        var preset = new Option<string>("--preset") { Description = "Language-model preset to build in memory (random init).", DefaultValueFactory = _ => "llama-100m" };
        var tokens = new Option<int>("--tokens") { Description = "Tokens to decode after the prefill.", DefaultValueFactory = _ => 64 };
        var prompt = new Option<int>("--prompt-tokens") { Description = "Prefill length.", DefaultValueFactory = _ => 16 };
        var dtypes = new Option<string>("--dtypes") { Description = "Comma-separated weight/compute dtypes (f32, bf16, f16).", DefaultValueFactory = _ => "f32,bf16" };
        var command = new Command("decode", "Batch-1 decode tokens/s of a LLaMA preset vs the memory-bandwidth bound measured in the same run") { preset, tokens, prompt, dtypes };
        command.SetAction(parse =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            if (VisualChat.Model.Presets.ModelPresetCatalog.Get(parse.GetValue(preset)!) is not VisualChat.Model.Presets.LanguageModelPreset lm)
            {
                parse.InvocationConfiguration.Error.WriteLine($"vchat bench decode: preset '{parse.GetValue(preset)}' is not a language model.");
                return 1;
            }
            var config = lm.Config();
            var types = parse.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(VisualChat.Model.DevicePolicy.ParseDType).ToList();
            stdout.WriteLine($"machine: {MachineInfo.Current()}");
            double bandwidth = Roofline.CopyBandwidth();
            stdout.WriteLine($"copy bandwidth (read+write): {bandwidth / 1e9:F1} GB/s");
            stdout.WriteLine($"model: {lm.Name}, {config.ParameterCount():N0} parameters; batch 1, greedy, KV cache, prompt {parse.GetValue(prompt)} tokens");
            if (types.Any(t => t != TorchSharp.torch.ScalarType.Float32))
                stdout.WriteLine("note: bf16/f16 compute runs as is; on CPUs without native bf16 (no avx512_bf16/amx_bf16) half-precision matmuls are far slower than fp32.");
            stdout.WriteLine($"{"variant",-36} {"prefill ms",11} {"tokens/s",9} {"MB/token",9} {"bound tok/s",12} {"achieved/bound",15}");
            foreach (var row in DecodeBenchmark.Run(config, types, bandwidth, parse.GetValue(tokens), parse.GetValue(prompt)))
                stdout.WriteLine($"{row.Variant,-36} {row.PrefillMs,11:F1} {row.TokensPerSecond,9:F2} {row.BytesPerToken / 1e6,9:F1} {row.BoundTokensPerSecond,12:F2} {row.RatioToBound,15:P1}");
            return 0;
        });
        return command;
    }
}
