using System.CommandLine;
using VisualChat.Benchmarks;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;

namespace VisualChat.Cli.Commands;

/// <summary>
/// <c>vchat bench vision</c>: images/s of the vision encoder's Encode (fp32, no grad, random weights in memory) and its
/// matmul FLOP rate as a share of the fp32 GEMM rate measured in the same run.
/// </summary>
public static class BenchVisionCommand
{
    public static Command Create()
    {
        var preset = new Option<string[]>("--preset")
        {
            Description = $"Vision presets to run ({string.Join(", ", VisionPresets.Names)}); qwen-vl-448 is ~20x heavier than CLIP ViT-L/14.",
            DefaultValueFactory = _ => ["tiny", "clip-vit-large-patch14"],
            AllowMultipleArgumentsPerToken = true,
        };
        var batch = new Option<int>("--batch") { Description = "Images per Encode call.", DefaultValueFactory = _ => 4 };
        var repeat = new Option<int>("--repeat") { Description = "Timed Encode calls after one warm-up (best is reported).", DefaultValueFactory = _ => 3 };
        var command = new Command("vision", "Vision encoder throughput (images/s, fp32) against the fp32 GEMM roofline.") { preset, batch, repeat };
        command.SetAction(parse =>
        {
            var presets = parse.GetValue(preset)!;
            int batchSize = parse.GetValue(batch), repeats = parse.GetValue(repeat);
            if (batchSize < 1 || repeats < 1)
            {
                Console.Error.WriteLine($"--batch and --repeat must be at least 1 (got {batchSize} and {repeats}).");
                return 2;
            }
            foreach (var name in presets)
            {
                try
                {
                    VisionPresets.Info(name);
                }
                catch (ArgumentException e)
                {
                    Console.Error.WriteLine($"--preset: {e.Message}");
                    return 2;
                }
                if (VisionBenchmark.IsHeavy(name))
                    Console.Error.WriteLine($"warning: {name} costs about 20x CLIP ViT-L/14 per image and needs ~{VisionPresets.Info(name).Bytes(TorchSharp.torch.ScalarType.Float32) >> 30} GiB for fp32 weights; this takes a while.");
            }
            Console.WriteLine($"machine: {MachineInfo.Current()}");
            double gemm = Roofline.GemmThroughput();
            Console.WriteLine($"fp32 GEMM roofline (1024³ matmul, best of 5): {gemm / 1e9:F1} GFLOP/s");
            Console.WriteLine($"batch {batchSize}, fp32, no grad, random weights; best of {repeats} after one warm-up");
            Console.WriteLine($"{"preset",-28} {"px",4} {"tokens×width",13} {"params",8} {"GFLOP/img",10} {"ms/batch",9} {"images/s",9} {"GFLOP/s",8} {"% GEMM",7}");
            foreach (var name in presets)
            {
                var result = VisionBenchmark.Run(name, batchSize, repeats, gemm);
                Console.WriteLine($"{result.Preset,-28} {result.ImageSize,4} {$"{result.Tokens}×{result.Width}",13} {FormatCount(result.Parameters),8} {result.FlopsPerImage / 1e9,10:F2} " +
                                  $"{result.BestBatchSeconds * 1e3,9:F1} {result.ImagesPerSecond,9:F2} {result.AchievedFlopsPerSecond / 1e9,8:F1} {result.Utilisation * 100,6:F1}%");
            }
            return 0;
        });
        return command;
    }

    private static string FormatCount(long count) => count >= 1_000_000 ? $"{count / 1e6:F1}M" : $"{count / 1e3:F1}K";
}
