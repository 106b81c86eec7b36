using System.CommandLine;
using System.Diagnostics;
using VisualChat.Model;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat quantize --model DIR --out DIR --type q8|q4</c>: a LLaMA folder with int8 or 4-bit weights (block
/// scales), which generate, chat, eval and serve load as it is.</summary>
public static class QuantizeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "LLaMA folder (config.json + safetensors or pytorch_model.bin).", Required = true };
        var output = new Option<string>("--out") { Description = "Folder for the quantized model (written atomically).", Required = true };
        var type = new Option<string>("--type") { Description = "q8: int8 weights, one fp32 scale per 32 inputs (≈ 9 bits per weight); q4: 4-bit codes, one fp32 scale per 32 inputs (≈ 5 bits per weight).", DefaultValueFactory = _ => "q8" };
        var command = new Command("quantize", "Write a weight-only int8 or 4-bit copy of a LLaMA folder (decoder projections and lm_head)") { model, output, type };
        command.SetAction(parse =>
        {
            string src = parse.GetValue(model)!, dst = parse.GetValue(output)!, kind = parse.GetValue(type)!;
            try
            {
                int bits = kind switch {
                    "q8" => 8,
                    "q4" => 4,
                    _ => throw new ArgumentException($"--type '{kind}' is not available; use q8 (int8 weights) or q4 (4-bit weights), both with block scales."),
                };
                var clock = Stopwatch.StartNew();
                var report = LlamaQuantizer.Quantize(src, dst, message => Console.Error.WriteLine(message), bits);
                Console.WriteLine($"quantized {report.QuantizedMatrices} matrices of {src}: {report.SourceWeightBytes / 1e6:F1} MB → {report.OutputWeightBytes / 1e6:F1} MB in {clock.Elapsed.TotalSeconds:F1} s → {dst}");
                return 0;
            }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException)
            {
                Console.Error.WriteLine($"vchat quantize: {e.Message}");
                return 1;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                return CliErrors.Report("quantize", e, parse.GetValue(CliErrors.VerboseOption));
            }
        });
        return command;
    }
}
