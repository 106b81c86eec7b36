using System.CommandLine;
using VisualChat.Model;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat import --from llava SRC --out DIR</c>: a Hugging Face LLaVA-1.5 folder converted into a VisualChat
/// model folder (written atomically). Loading streams tensor by tensor into the model, so only one copy exists.</summary>
public static class ImportCommand
{
    public static Command Create()
    {
        var from = new Option<string>("--from") { Description = "Checkpoint kind: llava (Hugging Face LlavaForConditionalGeneration folder).", Required = true };
        var source = new Argument<string>("SRC") { Description = "The checkpoint folder." };
        var output = new Option<string>("--out") { Description = "Folder for the VisualChat model.", Required = true };
        var command = new Command("import", "Convert a LLaVA-1.5 (Hugging Face layout) checkpoint into a VisualChat model folder") { from, source, output };
        command.SetAction(parse =>
        {
            string kind = parse.GetValue(from)!, src = parse.GetValue(source)!, dst = parse.GetValue(output)!;
            try
            {
                if (kind != "llava")
                {
                    throw new ArgumentException(kind == "dsvc"
                        ? "--from dsvc is not implemented yet; DeepSpeed-VisualChat checkpoints cannot be imported in this version."
                        : $"--from '{kind}' is unknown; use llava.");
                }

                if (!LlavaCheckpoint.IsLlavaFolder(src))
                    throw new InvalidDataException($"{src}: no config.json with model_type \"llava\" there.");
                using var model = LlavaCheckpoint.Load(src);
                model.Save(dst);
                Console.WriteLine($"imported {src} ({model.ImageTokens} tokens per image, {model.parameters().Sum(p => p.numel()):N0} parameters) → {dst}");
                return 0;
            }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException)
            {
                Console.Error.WriteLine($"vchat import: {e.Message}");
                return 1;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                return CliErrors.Report("import", e, parse.GetValue(CliErrors.VerboseOption));
            }
        });
        return command;
    }
}
