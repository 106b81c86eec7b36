using System.CommandLine;
using VisualChat.Model;
using VisualChat.Training;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat export --checkpoint DIR --out DIR</c>: a training checkpoint merged with its base into a standalone
/// model folder, written atomically (a killed export leaves the previous model in place, never a mix).
/// <c>vchat export --format llava-hf --model DIR --out DIR</c>: a model folder written in the Hugging Face LLaVA layout.</summary>
public static class ExportCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "A checkpoint folder of a run (e.g. runs/x/best or runs/x/final)." };
        var output = new Option<string>("--out") { Description = "Folder for the standalone model.", Required = true };
        var format = new Option<string>("--format") { Description = "visualchat (default: merge --checkpoint) or llava-hf (write --model as a Hugging Face LLaVA folder).", DefaultValueFactory = _ => "visualchat" };
        var modelOption = new Option<string>("--model") { Description = "--format llava-hf: the model folder to export." };
        var dtype = new Option<string>("--dtype") { Description = "--format llava-hf: float32 (default), bfloat16 or float16.", DefaultValueFactory = _ => "float32" };
        var command = new Command("export", "Merge a training checkpoint (trained tensors, LoRA) with its base model into a standalone model folder, or write a model as LLaVA (llava-hf)") { checkpoint, output, format, modelOption, dtype };
        command.SetAction(parse =>
        {
            try
            {
                switch (parse.GetValue(format))
                {
                    case "visualchat":
                        CheckpointExport.Export(parse.GetValue(checkpoint) ?? throw new ArgumentException("--checkpoint is required for --format visualchat."), parse.GetValue(output)!, Console.WriteLine);
                        return 0;
                    case "llava-hf":
                        var folder = parse.GetValue(modelOption) ?? throw new ArgumentException("--model (a model folder) is required for --format llava-hf.");
                        using (var model = VisualChatModel.Load(folder))
                        {
                            if (LlavaExport.WhyNot(model) is { } reason) throw new ArgumentException($"{folder} cannot be exported as llava-hf: {reason}.");
                            LlavaExport.Write(model, parse.GetValue(output)!, DevicePolicy.ParseDType(parse.GetValue(dtype)!));
                        }
                        Console.WriteLine($"wrote {parse.GetValue(output)} (LLaVA, Hugging Face layout)");
                        return 0;
                    default:
                        throw new ArgumentException($"--format '{parse.GetValue(format)}' is unknown; use visualchat or llava-hf.");
                }
            }
            catch (Exception e) when (e is IOException or InvalidDataException or TrainingConfigException or UnauthorizedAccessException or ArgumentException)
            {
                Console.Error.WriteLine($"vchat export: {e.Message}");
                return 1;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                return CliErrors.Report("export", e, parse.GetValue(CliErrors.VerboseOption));
            }
        });
        return command;
    }
}
