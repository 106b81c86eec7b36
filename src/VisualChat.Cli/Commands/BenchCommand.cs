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
                Console.WriteLine($"{row.Kernel,-12} {row.SequenceLength,6} {row.Images,7} {row.ForwardBackwardMs,11:F1} {row.RatioToCausal,9:F2} {row.PeakExtraMiB,15:F1}");
            return 0;
        });
        return command;
    }
}
