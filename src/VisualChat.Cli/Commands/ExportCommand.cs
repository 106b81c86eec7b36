using System.CommandLine;
using VisualChat.Training;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat export --checkpoint DIR --out DIR</c>: a training checkpoint merged with its base into a standalone
/// model folder, written atomically (a killed export leaves the previous model in place, never a mix).</summary>
public static class ExportCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "A checkpoint folder of a run (e.g. runs/x/best or runs/x/final).", Required = true };
        var output = new Option<string>("--out") { Description = "Folder for the standalone model.", Required = true };
        var command = new Command("export", "Merge a training checkpoint (trained tensors, LoRA) with its base model into a standalone model folder") { checkpoint, output };
        command.SetAction(parse =>
        {
            try
            {
                CheckpointExport.Export(parse.GetValue(checkpoint)!, parse.GetValue(output)!, Console.WriteLine);
                return 0;
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
