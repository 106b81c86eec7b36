using System.Text.Json.Nodes;
using VisualChat.Model;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Training;

/// <summary>
/// Turns a training checkpoint (only the trained tensors + a manifest naming the base model) into a standalone model
/// folder: the base is rebuilt exactly as the run built it, the checkpoint's tensors are loaded over it (every one must
/// exist in the model with the same shape), LoRA adapters are merged into their weights, and the result is saved —
/// a VisualChat model folder (docs/model-folder.md) or, for <c>llama-lm</c> runs, a Hugging Face LLaMA folder.
/// </summary>
public static class CheckpointExport
{
    public static string Export(string checkpointFolder, string outputFolder, Action<string>? log = null)
    {
        var info = CheckpointStore.TryRead(checkpointFolder)
            ?? throw new InvalidDataException($"{checkpointFolder} is not a complete training checkpoint (no {CheckpointStore.ManifestFile} marked complete).");
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(checkpointFolder, CheckpointStore.ManifestFile)))!.AsObject();
        var trainingConfig = manifest["training_config"]?.ToJsonString()
            ?? throw new InvalidDataException($"{checkpointFolder}/{CheckpointStore.ManifestFile} names no training_config; it was not written by vchat train.");
        var config = TrainingConfig.Parse(trainingConfig, $"{checkpointFolder}/{CheckpointStore.ManifestFile}");
        var weights = Path.Combine(checkpointFolder, CheckpointStore.WeightsFile);
        if (!File.Exists(weights)) throw new FileNotFoundException($"{weights} is missing from the checkpoint.", weights);

        switch (config.Model.Kind)
        {
            case "visualchat":
            {
                using var model = TrainingRunFactory.LoadOrAssembleVisualChat(config.Model, config.Seed, log);
                ApplyCheckpoint(model, config, weights, log);
                model.Save(outputFolder);
                break;
            }
            case "llama-lm":
            {
                var folder = config.Model.Path ?? throw new InvalidDataException("Exporting a llama-lm checkpoint needs its base model.path.");
                var (lm, tokenizer) = LanguageModelFolder.Load(folder);
                using (lm)
                {
                    ApplyCheckpoint(lm, config, weights, log);
                    LanguageModelFolder.Save(outputFolder, lm, tokenizer);
                }
                break;
            }
            default:
                throw new InvalidDataException($"{checkpointFolder}: cannot export model.kind '{config.Model.Kind}'.");
        }
        log?.Invoke($"exported {checkpointFolder} (step {info.Step}) to {outputFolder}");
        return outputFolder;
    }

    static void ApplyCheckpoint(nn.Module model, TrainingConfig config, string weights, Action<string>? log)
    {
        if (config.LoraDim > 0)
            LoraInjector.Inject(model, config.LoraModuleName, config.LoraDim, config.LoraAlpha ?? config.LoraDim, config.Seed);
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (var source = TensorFiles.Open(weights))
        using (no_grad())
        {
            foreach (var entry in source.Entries)
            {
                if (!parameters.TryGetValue(entry.Name, out var target))
                    throw new InvalidDataException($"{weights}: tensor '{entry.Name}' is not a parameter of the rebuilt base model; was the base changed since training?");
                if (!entry.Shape.SequenceEqual(target.shape))
                    throw new InvalidDataException($"{weights}: '{entry.Name}' is [{string.Join(", ", entry.Shape)}] but the base model has [{string.Join(", ", target.shape)}].");
                using var value = source.Read(entry.Name, target.dtype);
                target.copy_(value);
            }
            log?.Invoke($"applied {source.Entries.Count} trained tensors from {weights}");
        }
        if (config.LoraDim > 0)
        {
            int merged = LoraInjector.MergeAndUnwrap(model);
            log?.Invoke($"merged {merged} LoRA adapters into their weights");
        }
    }
}
