using System.Text.Json.Nodes;
using TorchSharp;
using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Training.Distributed;
using VisualChat.Weights;

namespace VisualChat.Training;

/// <summary>A ready-to-run trainer plus what it owns.</summary>
public sealed class TrainingRun(ITrainer trainer, TorchSharp.torch.nn.Module owned, IDisposable? alsoOwned = null) : IDisposable
{
    public ITrainer Trainer { get; } = trainer;
    /// <summary>Parameters of the model being trained (all of them, frozen included).</summary>
    public long ModelParameters { get; } = owned.parameters().Sum(p => p.numel());
    public TrainingSummary Run(CancellationToken cancellationToken = default) => Trainer.Run(cancellationToken);
    public void Dispose() { Trainer.Dispose(); owned.Dispose(); alsoOwned?.Dispose(); }
}

/// <summary>
/// Builds the model, data and trainer of a run from its config — the one place <c>vchat train</c> constructs models.
/// Kinds: <c>visualchat</c> (the DeepSpeed-VisualChat recipe on a data config) and <c>llama-lm</c> (text-only LLaMA LM on a JSONL of {"text": ...}).
/// </summary>
public static class TrainingRunFactory
{
    public static readonly string[] Kinds = ["visualchat", "llama-lm"];

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
            case "visualchat":
                if (config.Model.Path is null && (config.Model.Lm is null || config.Model.Vision is null))
                    throw new TrainingConfigException("Training config for model.kind visualchat needs 'model.path' (a VisualChat model folder) or both 'model.lm' (LLaMA folder) and 'model.vision' (vision encoder folder).");
                foreach (var (key, folder) in new[] { ("model.path", config.Model.Path), ("model.lm", config.Model.Lm), ("model.vision", config.Model.Vision) })
                    if (folder is not null && !Directory.Exists(folder)) throw new TrainingConfigException($"Training config key '{key}' = {folder}: folder does not exist.");
                if (config.Model.Path is { } modelFolder && !VisualChatModel.IsModelFolder(modelFolder))
                    throw new TrainingConfigException($"Training config key 'model.path' = {modelFolder}: no {VisualChatConfig.FileName} there and no LLaVA config.json (write one with `vchat init-model --kind visualchat`, or give model.lm + model.vision).");
                if (config.Model.AttentionMode is { } mode)
                {
                    try { VisualChatConfig.ParseAttentionMode(mode, "training config"); }
                    catch (Exception error) when (error is ArgumentException or InvalidDataException) { throw new TrainingConfigException($"Training config key 'model.attention_mode': {error.Message}"); }
                }
                if (config.Model.Path is null)
                {
                    if (config.Model.Projection is not ("baseline" or "vit" or "perceiver"))
                        throw new TrainingConfigException($"Training config key 'model.projection' = {config.Model.Projection}: use baseline, vit or perceiver.");
                }
                if (config.DataConfig is null) throw new TrainingConfigException("Training config key 'data_config' (a data config, see docs/data-formats.md) is required for model.kind visualchat.");
                if (!File.Exists(config.DataConfig)) throw new TrainingConfigException($"Training config key 'data_config' = {config.DataConfig}: file does not exist.");
                break;
            default:
                throw new TrainingConfigException($"Training config key 'model.kind' = {config.Model.Kind}: unknown model kind; known: {string.Join(", ", Kinds)}.");
        }
    }

    /// <param name="communicator">Under mpirun: this rank's job; the data is sharded and the trainer reduces over it.</param>
    public static TrainingRun Create(TrainingConfig config, Action<string>? log = null, MpiCommunicator? communicator = null)
    {
        config.Validate();
        CheckInputs(config);
        return config.Model.Kind switch {
            "llama-lm" => CreateLlamaLm(config, log, communicator),
            "visualchat" => CreateVisualChat(config, log, communicator),
            _ => throw new TrainingConfigException($"Training config key 'model.kind' = {config.Model.Kind}: unknown model kind; known: {string.Join(", ", Kinds)}."),
        };
    }

    static DataShard ShardOf(MpiCommunicator? communicator) => communicator is null ? DataShard.Whole : new DataShard(communicator.Rank, communicator.Size);

    static TrainingRun CreateLlamaLm(TrainingConfig config, Action<string>? log, MpiCommunicator? communicator)
    {
        var tokenizer = TokenizerFactory.FromPath(config.Model.Tokenizer ?? config.Model.Path!);
        var skipped = new List<string>();
        int records = 0;
        var all = TextLmData.ReadJsonl(config.TrainData!, tokenizer, config.MaxSeqLen, skipped, count => records += count);
        var (train, eval) = config.EvalData is { } evalPath
            ? (all, TextLmData.ReadJsonl(evalPath, tokenizer, config.MaxSeqLen, skipped, count => records += count))
            : TextLmData.Split(all, config.EvalFraction, config.Seed);
        foreach (var line in skipped) log?.Invoke($"skipped record {line}");
        if (skipped.Count > config.MaxSkipFraction * records)
        {
            throw new DataQualityException($"{skipped.Count} of {records} text records were skipped, more than max_skip_fraction = {config.MaxSkipFraction:P1}; " +
                $"fix them or raise max_skip_fraction. First: {string.Join("; ", skipped.Take(5))}");
        }

        var data = new TextLmData(train, eval, config.PerDeviceTrainBatchSize, config.PerDeviceEvalBatchSize, config.Seed, Collator.For(tokenizer)) { Skipped = skipped, Shard = ShardOf(communicator) };

        var configPath = config.Model.Config ?? Path.Combine(config.Model.Path!, "config.json");
        var llamaConfig = LlamaConfig.Load(configPath);
        if (llamaConfig.VocabSize < tokenizer.VocabSize)
            throw new TrainingConfigException($"Model vocab_size {llamaConfig.VocabSize} ({configPath}) is smaller than the tokenizer's {tokenizer.VocabSize}.");
        LlamaForCausalLM model;
        string? weights = config.Model.Path is { } folder && HasWeights(folder) ? folder : null;
        if (weights is not null && communicator is not null && config.Distributed.ZeroStage == 3 && config.Model.Config is null)
        {
            // ZeRO-3: fp32 weights are used in place from a private memory mapping, so a rank reads only the pages of
            // its own shards and of the tensors that stay whole: no rank ever holds the whole decoder, at load either.
            // (Other runs copy, which also checks every tensor for NaN/Inf; mapping skips that to leave pages unread.)
            model = LlamaForCausalLM.FromPretrained(weights, memoryMap: true);
            log?.Invoke(DevicePolicy.ParseDType(llamaConfig.StorageDtype) == TorchSharp.torch.ScalarType.Float32
                ? $"memory-mapped the weights of {weights} (ZeRO-3: this rank reads only its shards' pages)"
                : $"loaded {weights}: its {llamaConfig.StorageDtype} weights were converted to fp32 whole (only fp32-stored weights are memory-mapped), then ZeRO-3 keeps this rank's shards");
        }
        else
        {
            model = new LlamaForCausalLM(llamaConfig, seed: config.Seed);
            if (weights is not null)
            {
                using var source = TensorFiles.Open(weights);
                var report = StateDict.Load(model, source);
                log?.Invoke($"loaded {report.Loaded.Count} tensors from {weights}");
            }
            else
            {
                log?.Invoke($"no weights in model.path; training from a random init of {configPath}");
            }
        }

        model.to(TorchSharp.torch.device(config.Device));
        if (config.LoraDim > 0)
        {
            var wrapped = LoraInjector.Inject(model, config.LoraModuleName, config.LoraDim, config.LoraAlpha ?? config.LoraDim, config.Seed);
            log?.Invoke($"LoRA rank {config.LoraDim} on {wrapped.Count} Linear layers");
        }
        model.model.GradientCheckpointing = config.GradientCheckpointing;
        var trainable = new LlamaLmTrainable(model);
        var manifest = new JsonObject {
            ["model"] = new JsonObject { ["kind"] = config.Model.Kind, ["path"] = Full(config.Model.Path), ["config"] = Full(configPath), ["tokenizer"] = Full(config.Model.Tokenizer ?? config.Model.Path) },
            ["data"] = new JsonObject { ["train_data"] = Full(config.TrainData), ["eval_data"] = Full(config.EvalData), ["data_config"] = Full(config.DataConfig),
                ["train_samples"] = train.Count, ["eval_samples"] = eval.Count },
        };
        var trainer = new Trainer<TrainingBatch>(trainable, data, config, manifest, communicator) { Log = log };
        return new TrainingRun(trainer, model);
    }

    /// <summary>A VisualChat model for training: a complete folder, or an LM folder + a vision folder assembled with a
    /// fresh projection and the image token added to the tokenizer.</summary>
    public static VisualChatModel LoadOrAssembleVisualChat(ModelSection section, long seed, Action<string>? log)
    {
        if (section.Path is { } folder)
        {
            log?.Invoke($"loading VisualChat model {folder}");
            var loaded = VisualChatModel.Load(folder);
            if (section.AttentionMode is { } requested && VisualChatConfig.ParseAttentionMode(requested, "training config") != loaded.Config.AttentionMode)
            {
                log?.Invoke($"attention_mode: {loaded.Config.AttentionModeName} (the folder's) → {requested} (model.attention_mode)");
                try { loaded.SetAttentionMode(VisualChatConfig.ParseAttentionMode(requested, "training config")); }
                catch (InvalidOperationException error)
                {
                    loaded.Dispose();
                    throw new TrainingConfigException($"Training config key 'model.attention_mode' = {requested}: {error.Message}");
                }
            }
            return loaded;
        }
        string attentionMode = section.AttentionMode ?? "mmca";
        log?.Invoke($"assembling a VisualChat model from {section.Lm} + {section.Vision} ({attentionMode}, {section.Projection} projection)");
        var (lm, tokenizer) = LanguageModelFolder.Load(section.Lm!);
        var vision = Vision.Encoders.VisionEncoderFolder.Load(section.Vision!);
        int imageTokenId = tokenizer.TokenToId(ConversationTemplate.ImagePlaceholder) is { } existing && existing >= lm.Config.VocabSize
            ? existing
            : Math.Max(lm.Config.VocabSize, tokenizer.VocabSize);
        if (tokenizer.TokenToId(ConversationTemplate.ImagePlaceholder) is null)
            tokenizer.AddTokenWithId(ConversationTemplate.ImagePlaceholder, imageTokenId, special: true, source: "VisualChat image placeholder");
        var config = new VisualChatConfig
        {
            AttentionModeName = attentionMode,
            Projection = section.Projection,
            LmVocabSize = lm.Config.VocabSize,
            ImageTokenId = imageTokenId,
        };
        config.UseVisionEncoder(vision.Encoder);
        return new VisualChatModel(config, lm, vision.Encoder, seed) { Tokenizer = tokenizer, ImageProcessor = vision.Processor };
    }

    static TrainingRun CreateVisualChat(TrainingConfig config, Action<string>? log, MpiCommunicator? communicator)
    {
        var dataConfig = DataConfig.Load(config.DataConfig!);
        var model = LoadOrAssembleVisualChat(config.Model, config.Seed, log);
        var tokenizer = model.Tokenizer ?? throw new TrainingConfigException($"The VisualChat model has no tokenizer (its lm/ folder needs tokenizer.model or tokenizer.json).");
        if (dataConfig.System is not null && dataConfig.System != model.Config.SystemPrompt)
            log?.Invoke($"note: {config.DataConfig} sets a system text; the model's own ({VisualChatConfig.FileName} system_prompt) is used so training and chat prompts stay identical");
        if (dataConfig.ImageTokens != model.ImageTokens)
            log?.Invoke($"note: lengths count {model.ImageTokens} tokens per image (the model's), not the data config's image_tokens {dataConfig.ImageTokens}");
        var mixed = DataMixer.Build(dataConfig, Environment.ProcessorCount);
        var template = new ConversationTemplate(model.Config.TemplateOptions);
        int maxSeqLen = Math.Min(config.MaxSeqLen, model.LmConfig.MaxPositionEmbeddings);
        var encoder = new SampleEncoder(template, tokenizer, maxSeqLen, model.ImageTokens, dataConfig.Truncation);
        var train = encoder.Prepare(mixed.Train, mixed.Report);
        var eval = encoder.Prepare(mixed.Eval, mixed.Report);
        log?.Invoke($"data: {train.Count} train / {eval.Count} eval samples from {dataConfig.DataSets.Count} data set(s); {mixed.Report.Skipped} records skipped");
        var processor = new Vision.Imaging.ClipImageProcessor(model.ImageProcessor ?? Vision.Imaging.ImageProcessorConfig.Clip224);
        var data = new VisualChatTrainingData(train, eval, encoder, Collator.For(tokenizer), processor,
            config.PerDeviceTrainBatchSize, config.PerDeviceEvalBatchSize, config.Seed, maxSkipFraction: dataConfig.MaxSkipFraction) { Log = log, Shard = ShardOf(communicator) };

        model.to(TorchSharp.torch.device(config.Device));
        model.lm.model.GradientCheckpointing = config.GradientCheckpointing;
        var trainable = new VisualChatTrainable(model);
        bool visionTrains = model.vision.named_parameters().Any(p => ParameterSelection.MatchesAny("vision." + p.name, config.Unfreeze));
        if (config.LoraDim > 0)
        {
            var wrapped = LoraInjector.Inject(model, config.LoraModuleName, config.LoraDim, config.LoraAlpha ?? config.LoraDim, config.Seed);
            log?.Invoke($"LoRA rank {config.LoraDim} on {wrapped.Count} Linear layers");
            visionTrains |= wrapped.Any(name => name.StartsWith("vision.", StringComparison.Ordinal));
        }
        if (visionTrains)
        {
            // The encoder must run with autograd (and bypass the feature cache) for its LoRA or unfrozen tensors to
            // learn; the trainer still freezes every tensor it does not select.
            model.VisionEncoder.Unfreeze();
            log?.Invoke("the vision encoder runs with gradients (LoRA or unfreeze selects some of its tensors)");
        }
        else if (config.VisionFeatureCacheMb > 0)
        {
            model.FeatureCache = new Vision.Encoders.VisionFeatureCache((long)config.VisionFeatureCacheMb << 20);
        }

        var manifest = new JsonObject {
            ["model"] = new JsonObject {
                ["kind"] = config.Model.Kind, ["path"] = Full(config.Model.Path), ["lm"] = Full(config.Model.Lm), ["vision"] = Full(config.Model.Vision),
                ["attention_mode"] = model.Config.AttentionModeName, ["projection"] = model.Config.Projection, ["seed"] = config.Seed,
            },
            ["data"] = new JsonObject { ["data_config"] = Full(config.DataConfig), ["train_samples"] = train.Count, ["eval_samples"] = eval.Count },
        };
        var trainer = new Trainer<VisualChatTrainingBatch>(trainable, data, config, manifest, communicator) { Log = log };
        return new TrainingRun(trainer, model, model.FeatureCache);
    }

    static string? Full(string? path) => path is null ? null : Path.GetFullPath(path);

    static bool HasWeights(string folder) =>
        Directory.GetFiles(folder, "*.safetensors").Length > 0 || File.Exists(Path.Combine(folder, "pytorch_model.bin"))
        || Directory.GetFiles(folder, "*.safetensors.index.json").Length > 0 || File.Exists(Path.Combine(folder, "pytorch_model.bin.index.json"));
}
