using System.CommandLine;
using VisualChat.Model;
using VisualChat.Model.Presets;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat init-model --preset NAME --out DIR</c>: writes a randomly initialised model folder from a preset.</summary>
public static class InitModelCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "Preset name (see --list)." };
        var output = new Option<string>("--out") { Description = "Folder to write config.json, the weights and the tokenizer into." };
        var dtype = new Option<string?>("--dtype") { Description = "Weight storage dtype: f32, bf16 or f16 (default: the preset's)." };
        var seed = new Option<long>("--seed") { Description = "Random seed of the weights.", DefaultValueFactory = _ => 0 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file or folder to copy in (presets with the 32000-id LLaMA vocabulary)." };
        var describe = new Option<bool>("--describe") { Description = "Print shapes, parameter count and bytes; write nothing." };
        var list = new Option<bool>("--list") { Description = "List the presets." };
        var kind = new Option<string?>("--kind") { Description = "lm, vision or visualchat: which preset of a shared name (tiny) to use; default lm, then visualchat, then vision." };
        var command = new Command("init-model", "Write a randomly initialised model folder (config.json, safetensors, tokenizer) from a named preset")
        {
            preset, kind, output, dtype, seed, tokenizer, describe, list,
        };
        command.SetAction(parse =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            if (parse.GetValue(list))
            {
                foreach (var p in ModelPresetCatalog.All)
                {
                    var d = p.Describe();
                    stdout.WriteLine($"{p.Name,-28} {ModelPresetCatalog.KindName(p.Kind),-10} {d.ParameterCount / 1e6,12:F1}M params  {p.Summary}");
                }
                return 0;
            }
            string? name = parse.GetValue(preset);
            if (name is null)
            {
                stderr.WriteLine("vchat init-model: give --preset NAME (or --list to see the presets).");
                return 1;
            }
            try
            {
                string? kindName = parse.GetValue(kind);
                var chosen = ModelPresetCatalog.Get(name, kindName is null ? null : ModelPresetCatalog.ParseKind(kindName));
                if (parse.GetValue(describe))
                {
                    stdout.WriteLine(chosen.Describe().Format());
                    return 0;
                }
                string? folder = parse.GetValue(output);
                if (folder is null)
                {
                    stderr.WriteLine("vchat init-model: give --out DIR (or --describe to only print the shapes).");
                    return 1;
                }
                string? dtypeName = parse.GetValue(dtype);
                var options = new PresetWriteOptions
                {
                    DType = dtypeName is null ? null : DevicePolicy.ParseDType(dtypeName),
                    Seed = parse.GetValue(seed),
                    TokenizerPath = parse.GetValue(tokenizer),
                    Log = stdout,
                };
                var result = chosen.Write(folder, options);
                stdout.WriteLine($"wrote {folder}: {string.Join(", ", result.Files)}; weights {PresetDescription.FormatBytes(result.WeightBytes)}" +
                                 (result.HasTokenizer ? "; tokenizer included" : "; no tokenizer"));
                return 0;
            }
            catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or UnauthorizedAccessException or InvalidOperationException)
            {
                stderr.WriteLine($"vchat init-model: {e.Message}");
                return 1;
            }
        });
        return command;
    }
}
