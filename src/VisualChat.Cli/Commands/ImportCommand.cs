using System.CommandLine;
using VisualChat.Model;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat import --from llava|dsvc SRC --out DIR</c>: a Hugging Face LLaVA-1.5 folder or a DeepSpeed-VisualChat
/// checkpoint converted into a VisualChat model folder (written atomically). Loading streams tensor by tensor into the
/// model, so only one copy exists.</summary>
public static class ImportCommand
{
    public static Command Create()
    {
        var from = new Option<string>("--from") { Description = "Checkpoint kind: llava (Hugging Face LlavaForConditionalGeneration folder) or dsvc (a DeepSpeed-VisualChat epoch folder with pytorch_model.bin).", Required = true };
        var source = new Argument<string>("SRC") { Description = "The checkpoint folder (for dsvc also its pytorch_model.bin)." };
        var output = new Option<string>("--out") { Description = "Folder for the VisualChat model.", Required = true };
        var lm = new Option<string?>("--lm") { Description = "dsvc: the LLaMA folder it was trained on (config.json, tokenizer.model; weights when the checkpoint lacks them). Default: the path in train_args.pt." };
        var vision = new Option<string?>("--vision") { Description = "dsvc: the CLIP or qwen_clip folder it was trained with (config.json, preprocessor_config.json). Default: the path in train_args.pt." };
        var attention = new Option<string?>("--attention") { Description = "dsvc: mmca or causal (--enable_mmca_attention or not); default: train_args.pt." };
        var command = new Command("import", "Convert a LLaVA-1.5 (Hugging Face layout) or DeepSpeed-VisualChat checkpoint into a VisualChat model folder") { from, source, output, lm, vision, attention };
        command.SetAction(parse =>
        {
            string kind = parse.GetValue(from)!, src = parse.GetValue(source)!, dst = parse.GetValue(output)!;
            var stdout = parse.InvocationConfiguration.Output;
            try
            {
                VisualChatModel model;
                if (kind == "llava")
                {
                    if (!LlavaCheckpoint.IsLlavaFolder(src))
                        throw new InvalidDataException($"{src}: no config.json with model_type \"llava\" there.");
                    model = LlavaCheckpoint.Load(src);
                }
                else if (kind == "dsvc")
                {
                    var mode = parse.GetValue(attention) switch
                    {
                        null => (AttentionMode?)null,
                        "mmca" => AttentionMode.Mmca,
                        "causal" => AttentionMode.Causal,
                        var other => throw new ArgumentException($"--attention '{other}' is unknown; DeepSpeed-VisualChat trains mmca or causal."),
                    };
                    var options = new DsvcImportOptions { LanguageModelFolder = parse.GetValue(lm), VisionFolder = parse.GetValue(vision), AttentionMode = mode };
                    model = DsvcCheckpoint.Load(src, options, line => stdout.WriteLine($"  {line}"));
                }
                else
                {
                    throw new ArgumentException($"--from '{kind}' is unknown; use llava or dsvc.");
                }

                using (model)
                {
                    model.Save(dst);
                    stdout.WriteLine($"imported {src} ({model.Config.AttentionModeName}, {model.Config.Projection} projection, {model.ImageTokens} tokens per image, {model.parameters().Sum(p => p.numel()):N0} parameters) → {dst}");
                }
                return 0;
            }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException)
            {
                parse.InvocationConfiguration.Error.WriteLine($"vchat import: {e.Message}");
                return 1;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                return CliErrors.Report("import", e, parse.GetValue(CliErrors.VerboseOption), parse.InvocationConfiguration.Error);
            }
        });
        return command;
    }
}
