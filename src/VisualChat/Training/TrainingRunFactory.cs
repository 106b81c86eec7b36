using System.Text.Json.Nodes;
using TorchSharp;
using VisualChat.Data;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Weights;

namespace VisualChat.Training;

/// <summary>A ready-to-run trainer plus what it owns.</summary>
public sealed class TrainingRun(Func<CancellationToken, TrainingSummary> run, Trainer<TrainingBatch> trainer, IDisposable? owned) : IDisposable
{
    public Trainer<TrainingBatch> Trainer { get; } = trainer;
    public TrainingSummary Run(CancellationToken cancellationToken = default) => run(cancellationToken);
    public void Dispose() { Trainer.Dispose(); owned?.Dispose(); }
}

/// <summary>
/// Builds the model, data and trainer of a run from its config — the one place <c>vchat train</c> constructs models.
/// Kinds: <c>llama-lm</c> (text-only LLaMA LM on a JSONL of {"text": ...}).
/// </summary>
public static class TrainingRunFactory
{
    public static readonly string[] Kinds = ["llama-lm"];

    /// <summary>Checks the files a kind needs before anything is loaded.</summary>
    public static void CheckInputs(TrainingConfig config)
    {
        switch (config.Model.Kind)
        {
            case "llama-lm":
                if (config.Model.Path is null && config.Model.Config is null)
                    throw new TrainingConfigException("Training config key 'model.path' (HF folder) or 'model.config' (config.json for a random init) is required for model.kind llama-lm.");
                if (config.Model.Path is { } p && !Directory.Exists(p)) throw new TrainingConfigException($"Training config key 'model.path' = {p}: folder does not exist.");
                if (config.Model.Config is { } c && !File.Exists(c)) throw new TrainingConfigException($"Training config key 'model.config' = {c}: file does not exist.");
                var tokenizer = config.Model.Tokenizer ?? config.Model.Path;
                if (tokenizer is null) throw new TrainingConfigException("Training config key 'model.tokenizer' is required when 'model.path' is not given.");
                if (!File.Exists(tokenizer) && !Directory.Exists(tokenizer)) throw new TrainingConfigException($"Training config key 'model.tokenizer' = {tokenizer}: not found.");
                if (config.TrainData is null) throw new TrainingConfigException("Training config key 'train_data' (JSONL with a \"text\" field) is required for model.kind llama-lm.");
                if (!File.Exists(config.TrainData)) throw new TrainingConfigException($"Training config key 'train_data' = {config.TrainData}: file does not exist.");
                if (config.EvalData is { } e && !File.Exists(e)) throw new TrainingConfigException($"Training config key 'eval_data' = {e}: file does not exist.");
                break;
            default:
                throw new TrainingConfigException($"Training config key 'model.kind' = {config.Model.Kind}: unknown model kind; known: {string.Join(", ", Kinds)}.");
        }
    }

    public static TrainingRun Create(TrainingConfig config, Action<string>? log = null)
    {
        config.Validate();
        CheckInputs(config);
        return config.Model.Kind switch {
            "llama-lm" => CreateLlamaLm(config, log),
            _ => throw new TrainingConfigException($"Training config key 'model.kind' = {config.Model.Kind}: unknown model kind; known: {string.Join(", ", Kinds)}."),
        };
    }

    static TrainingRun CreateLlamaLm(TrainingConfig config, Action<string>? log)
    {
        var tokenizer = TokenizerFactory.FromPath(config.Model.Tokenizer ?? config.Model.Path!);
        var all = TextLmData.ReadJsonl(config.TrainData!, tokenizer, config.MaxSeqLen);
        var (train, eval) = config.EvalData is { } evalPath
            ? (all, TextLmData.ReadJsonl(evalPath, tokenizer, config.MaxSeqLen))
            : TextLmData.Split(all, config.EvalFraction, config.Seed);
        var data = new TextLmData(train, eval, config.PerDeviceTrainBatchSize, config.PerDeviceEvalBatchSize, config.Seed, Collator.For(tokenizer));

        var configPath = config.Model.Config ?? Path.Combine(config.Model.Path!, "config.json");
        var llamaConfig = LlamaConfig.Load(configPath);
        if (llamaConfig.VocabSize < tokenizer.VocabSize)
            throw new TrainingConfigException($"Model vocab_size {llamaConfig.VocabSize} ({configPath}) is smaller than the tokenizer's {tokenizer.VocabSize}.");
        var model = new LlamaForCausalLM(llamaConfig, seed: config.Seed);
        if (config.Model.Path is { } folder && HasWeights(folder))
        {
            using var source = TensorFiles.Open(folder);
            var report = StateDict.Load(model, source);
            log?.Invoke($"loaded {report.Loaded.Count} tensors from {folder}");
        }
        else log?.Invoke($"no weights in model.path; training from a random init of {configPath}");
        model.to(TorchSharp.torch.device(config.Device));
        if (config.LoraDim > 0)
        {
            var wrapped = LoraInjector.Inject(model, config.LoraModuleName, config.LoraDim, config.LoraAlpha ?? config.LoraDim, config.Seed);
            log?.Invoke($"LoRA rank {config.LoraDim} on {wrapped.Count} Linear layers");
        }
        var trainable = new LlamaLmTrainable(model);
        var manifest = new JsonObject {
            ["model"] = new JsonObject { ["kind"] = config.Model.Kind, ["path"] = Full(config.Model.Path), ["config"] = Full(configPath), ["tokenizer"] = Full(config.Model.Tokenizer ?? config.Model.Path) },
            ["data"] = new JsonObject { ["train_data"] = Full(config.TrainData), ["eval_data"] = Full(config.EvalData), ["data_config"] = Full(config.DataConfig),
                ["train_samples"] = train.Count, ["eval_samples"] = eval.Count },
        };
        var trainer = new Trainer<TrainingBatch>(trainable, data, config, manifest) { Log = log };
        return new TrainingRun(ct => trainer.Run(ct), trainer, model);
    }

    static string? Full(string? path) => path is null ? null : Path.GetFullPath(path);

    static bool HasWeights(string folder) =>
        Directory.GetFiles(folder, "*.safetensors").Length > 0 || File.Exists(Path.Combine(folder, "pytorch_model.bin"))
        || Directory.GetFiles(folder, "*.safetensors.index.json").Length > 0 || File.Exists(Path.Combine(folder, "pytorch_model.bin.index.json"));
}
