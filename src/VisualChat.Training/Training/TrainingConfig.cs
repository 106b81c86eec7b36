using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace VisualChat.Training;

/// <summary>A training config value out of range or unknown; the message names the key and the allowed values.</summary>
public sealed class TrainingConfigException(string message) : Exception(message);

/// <summary>What model and data a run trains (resolved by <see cref="TrainingRunFactory"/>).</summary>
public sealed class ModelSection
{
    /// <summary><c>visualchat</c>: the DeepSpeed-VisualChat recipe (a complete model folder in <see cref="Path"/>, or
    /// <see cref="Lm"/> + <see cref="Vision"/> folders assembled with a new projection); <c>llama-lm</c>: text-only
    /// LLaMA language model on a JSONL of texts.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "llama-lm";
    /// <summary>visualchat: a Hugging Face LLaMA folder (config.json, weights, tokenizer) to build a new model from.</summary>
    [JsonPropertyName("lm")] public string? Lm { get; set; }
    /// <summary>visualchat: a vision encoder folder (CLIP or Qwen-VL, HF layout) to build a new model from.</summary>
    [JsonPropertyName("vision")] public string? Vision { get; set; }
    /// <summary>visualchat: causal, causal+cross or mmca. New models: default mmca. A loaded model (<see cref="Path"/>)
    /// keeps its folder's mode unless this is given (causal ↔ mmca only).</summary>
    [JsonPropertyName("attention_mode")] public string? AttentionMode { get; set; }
    /// <summary>visualchat, new models: baseline, vit or perceiver (DSVC's vis_proj).</summary>
    [JsonPropertyName("projection")] public string Projection { get; set; } = "baseline";
    /// <summary>HF folder with config.json (+ weights, loaded when present).</summary>
    [JsonPropertyName("path")] public string? Path { get; set; }
    /// <summary>config.json used for a randomly initialised model when <see cref="Path"/> is not given.</summary>
    [JsonPropertyName("config")] public string? Config { get; set; }
    [JsonPropertyName("tokenizer")] public string? Tokenizer { get; set; }
}

/// <summary>Data-parallel training when the run is started by <c>mpirun -np N</c>; a single process ignores it.</summary>
public sealed class DistributedSection
{
    /// <summary>0: every rank keeps the full AdamW moments and gradients (plain data parallel); 1: each rank keeps
    /// 1/N of the moments and updates only its part of the parameters, which are all-gathered after the step;
    /// 2: as 1, and gradients are reduce-scattered, so each rank also keeps only its 1/N of the reduced gradients;
    /// 3: as 2, and each rank keeps only 1/N of the frozen decoder layers' weights, a layer being all-gathered just
    /// while it runs (gradient checkpointing is turned on for it).</summary>
    [JsonPropertyName("zero_stage")] public int ZeroStage { get; set; }
    /// <summary>MiB of gradients (or parameters) per collective call.</summary>
    [JsonPropertyName("bucket_mb")] public double BucketMb { get; set; } = 25;
}

/// <summary>Training hyper-parameters, named as DeepSpeed-VisualChat's training/main.py arguments where one exists.</summary>
public sealed class TrainingConfig
{
    [JsonPropertyName("model")] public ModelSection Model { get; set; } = new();
    /// <summary>Training data (JSONL with a "text" field for llama-lm).</summary>
    [JsonPropertyName("train_data")] public string? TrainData { get; set; }
    [JsonPropertyName("eval_data")] public string? EvalData { get; set; }
    /// <summary>Fraction of train_data held out for evaluation when eval_data is not given.</summary>
    [JsonPropertyName("eval_fraction")] public double EvalFraction { get; set; } = 0.1;
    [JsonPropertyName("data_config")] public string? DataConfig { get; set; }
    [JsonPropertyName("output_dir")] public string OutputDir { get; set; } = "runs/train";

    [JsonPropertyName("learning_rate")] public double LearningRate { get; set; } = 1e-3;
    /// <summary>LR for parameters the model marks pretrained (e.g. token embeddings); null = learning_rate.</summary>
    [JsonPropertyName("pretrained_learning_rate")] public double? PretrainedLearningRate { get; set; }
    [JsonPropertyName("weight_decay")] public double WeightDecay { get; set; } = 0.0;
    [JsonPropertyName("adam_beta1")] public double AdamBeta1 { get; set; } = 0.0;
    [JsonPropertyName("adam_beta2")] public double AdamBeta2 { get; set; } = 0.95;
    [JsonPropertyName("adam_epsilon")] public double AdamEpsilon { get; set; } = 1e-8;
    [JsonPropertyName("num_train_epochs")] public int NumTrainEpochs { get; set; } = 1;
    /// <summary>Stop after this many optimizer steps (0 = all epochs).</summary>
    [JsonPropertyName("max_steps")] public int MaxSteps { get; set; }
    [JsonPropertyName("per_device_train_batch_size")] public int PerDeviceTrainBatchSize { get; set; } = 1;
    [JsonPropertyName("per_device_eval_batch_size")] public int PerDeviceEvalBatchSize { get; set; } = 1;
    [JsonPropertyName("gradient_accumulation_steps")] public int GradientAccumulationSteps { get; set; } = 1;
    [JsonPropertyName("lr_scheduler_type")] public string LrSchedulerType { get; set; } = "cosine";
    [JsonPropertyName("num_warmup_steps")] public int? NumWarmupSteps { get; set; }
    [JsonPropertyName("warmup_ratio")] public double? WarmupRatio { get; set; }
    [JsonPropertyName("max_grad_norm")] public double MaxGradNorm { get; set; } = 1.0;
    [JsonPropertyName("seed")] public long Seed { get; set; } = 1234;
    /// <summary>fp32 | bf16 | fp16 | auto (auto = fp32 on CPU, bf16 on CUDA).</summary>
    [JsonPropertyName("precision")] public string Precision { get; set; } = "auto";
    [JsonPropertyName("initial_loss_scale")] public double InitialLossScale { get; set; } = 65536;
    [JsonPropertyName("loss_scale_window")] public int LossScaleWindow { get; set; } = 2000;
    [JsonPropertyName("max_seq_len")] public int MaxSeqLen { get; set; } = 4096;
    [JsonPropertyName("lora_dim")] public int LoraDim { get; set; }
    [JsonPropertyName("lora_alpha")] public double? LoraAlpha { get; set; }
    [JsonPropertyName("lora_module_name")] public List<string> LoraModuleName { get; set; } = [];
    [JsonPropertyName("only_optimize_lora")] public bool OnlyOptimizeLora { get; set; }
    /// <summary>Glob patterns (* and ?) of parameter names to train besides what the model declares trainable.</summary>
    [JsonPropertyName("unfreeze")] public List<string> Unfreeze { get; set; } = [];
    [JsonPropertyName("eval_every_steps")] public int EvalEverySteps { get; set; }
    [JsonPropertyName("save_every_epochs")] public int SaveEveryEpochs { get; set; } = 1;
    [JsonPropertyName("save_every_steps")] public int SaveEverySteps { get; set; }
    /// <summary>Write final/ at the end (benchmarks turn it off).</summary>
    [JsonPropertyName("save_final")] public bool SaveFinal { get; set; } = true;
    [JsonPropertyName("log_every_steps")] public int LogEverySteps { get; set; } = 10;
    /// <summary>stop | skip: what a NaN/Inf loss does.</summary>
    [JsonPropertyName("on_nan")] public string OnNan { get; set; } = "stop";
    /// <summary>on_nan: skip stops the run (as diverged) once more than this share of the last
    /// <see cref="Trainer{TBatch}.DivergenceWindow"/> batches was skipped.</summary>
    [JsonPropertyName("max_nan_skip_fraction")] public double MaxNanSkipFraction { get; set; } = 0.1;
    /// <summary>llama-lm: share of train_data/eval_data records that may be skipped (bad JSON, no text) before the run stops.</summary>
    [JsonPropertyName("max_skip_fraction")] public double MaxSkipFraction { get; set; } = 0.05;
    /// <summary>none | auto | a checkpoint folder.</summary>
    [JsonPropertyName("resume")] public string Resume { get; set; } = "none";
    /// <summary>Resume even though settings that change the data order or the optimizer differ from the checkpoint's.</summary>
    [JsonPropertyName("resume_force")] public bool ResumeForce { get; set; }
    /// <summary>Start a new run in an output_dir that holds one (its checkpoints and metrics are deleted first).</summary>
    [JsonPropertyName("overwrite")] public bool Overwrite { get; set; }
    [JsonPropertyName("device")] public string Device { get; set; } = "cpu";
    /// <summary>Recompute each LLaMA decoder layer in backward instead of keeping its activations (less memory, ~1/3 more compute).</summary>
    [JsonPropertyName("gradient_checkpointing")] public bool GradientCheckpointing { get; set; }

    /// <summary>visualchat: MiB of encoder outputs kept in memory, keyed by image content, so a frozen encoder runs once
    /// per distinct image instead of once per epoch (0 = off; ignored when LoRA or unfreeze trains the encoder). Worth it
    /// when the encoder's cost matters and its features of all training images fit in the budget (least recently used
    /// ones are evicted beyond it).</summary>
    [JsonPropertyName("vision_feature_cache_mb")] public int VisionFeatureCacheMb { get; set; }

    /// <summary>mpirun jobs: ZeRO stage and all-reduce bucket size (the global batch is per_device_train_batch_size ×
    /// gradient_accumulation_steps × ranks).</summary>
    [JsonPropertyName("distributed")] public DistributedSection Distributed { get; set; } = new();

    public static readonly string[] Schedules = ["linear", "cosine", "constant", "constant_with_warmup"];
    public static readonly string[] Precisions = ["auto", "fp32", "bf16", "fp16"];

    static readonly JsonSerializerOptions ReadOptions = new() {
        ReadCommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };
    static readonly JsonSerializerOptions WriteOptions = new() { WriteIndented = true };

    /// <summary>Reads a JSON or YAML (.yaml/.yml) config, applies <c>key=value</c> overrides, validates.</summary>
    public static TrainingConfig Load(string path, IEnumerable<string>? overrides = null)
    {
        if (!File.Exists(path)) throw new TrainingConfigException($"Training config '{path}' does not exist.");
        var text = File.ReadAllText(path);
        var extension = System.IO.Path.GetExtension(path).ToLowerInvariant();
        var json = extension is ".yaml" or ".yml" ? Data.DataConfig.YamlToJson(text, path) : text;
        return Parse(json, path, overrides);
    }

    public static TrainingConfig Parse(string json, string source = "training config", IEnumerable<string>? overrides = null)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new TrainingConfigException($"{source} is not valid JSON: {e.Message}"); }
        if (node is not JsonObject root) throw new TrainingConfigException($"{source}: expected an object at the top level.");
        foreach (var assignment in overrides ?? []) ApplyOverride(root, assignment);
        TrainingConfig config;
        try { config = root.Deserialize<TrainingConfig>(ReadOptions) ?? new(); }
        catch (JsonException e) { throw new TrainingConfigException($"{source}: {e.Message} (keys are listed in docs/training.md)"); }
        config.Validate();
        return config;
    }

    /// <summary><c>key=value</c> or <c>section.key=value</c>; the value is read as JSON when it parses (numbers, booleans,
    /// lists), as a string otherwise.</summary>
    public static void ApplyOverride(JsonObject root, string assignment)
    {
        int eq = assignment.IndexOf('=');
        if (eq <= 0) throw new TrainingConfigException($"--set '{assignment}': expected key=value.");
        var path = assignment[..eq].Trim().Split('.');
        var raw = assignment[(eq + 1)..];
        JsonNode? value;
        try { value = JsonNode.Parse(raw); }
        catch (JsonException) { value = JsonValue.Create(raw); }
        var target = root;
        foreach (var part in path[..^1])
        {
            if (target[part] is not JsonObject child) target[part] = child = new JsonObject();
            target = child;
        }
        target[path[^1]] = value;
    }

    public string ToJson() => JsonSerializer.Serialize(this, WriteOptions);

    /// <summary>Throws <see cref="TrainingConfigException"/> naming the first out-of-range key and its allowed range.</summary>
    public void Validate()
    {
        static void Require(bool ok, string key, object value, string range)
        {
            if (!ok) throw new TrainingConfigException($"Training config key '{key}' = {Convert.ToString(value, CultureInfo.InvariantCulture)} is out of range: {range}.");
        }
        Require(LearningRate > 0 && double.IsFinite(LearningRate), "learning_rate", LearningRate, "must be > 0");
        if (PretrainedLearningRate is { } plr) Require(plr >= 0 && double.IsFinite(plr), "pretrained_learning_rate", plr, "must be >= 0");
        Require(WeightDecay >= 0 && double.IsFinite(WeightDecay), "weight_decay", WeightDecay, "must be >= 0");
        Require(AdamBeta1 >= 0 && AdamBeta1 < 1, "adam_beta1", AdamBeta1, "must be in [0, 1)");
        Require(AdamBeta2 >= 0 && AdamBeta2 < 1, "adam_beta2", AdamBeta2, "must be in [0, 1)");
        Require(AdamEpsilon > 0, "adam_epsilon", AdamEpsilon, "must be > 0");
        Require(NumTrainEpochs >= 1, "num_train_epochs", NumTrainEpochs, "must be >= 1");
        Require(MaxSteps >= 0, "max_steps", MaxSteps, "must be >= 0 (0 = no limit)");
        Require(PerDeviceTrainBatchSize >= 1, "per_device_train_batch_size", PerDeviceTrainBatchSize, "must be >= 1");
        Require(PerDeviceEvalBatchSize >= 1, "per_device_eval_batch_size", PerDeviceEvalBatchSize, "must be >= 1");
        Require(GradientAccumulationSteps >= 1, "gradient_accumulation_steps", GradientAccumulationSteps, "must be >= 1");
        Require(Schedules.Contains(LrSchedulerType), "lr_scheduler_type", LrSchedulerType, $"one of {string.Join(", ", Schedules)}");
        if (NumWarmupSteps is { } ws) Require(ws >= 0, "num_warmup_steps", ws, "must be >= 0");
        if (WarmupRatio is { } wr) Require(wr >= 0 && wr <= 1, "warmup_ratio", wr, "must be in [0, 1]");
        Require(!(NumWarmupSteps is > 0 && WarmupRatio is > 0), "warmup_ratio", WarmupRatio ?? 0, "give either num_warmup_steps or warmup_ratio, not both");
        Require(MaxGradNorm >= 0, "max_grad_norm", MaxGradNorm, "must be >= 0 (0 = no clipping)");
        Require(Precisions.Contains(Precision), "precision", Precision, $"one of {string.Join(", ", Precisions)}");
        Require(InitialLossScale >= 1, "initial_loss_scale", InitialLossScale, "must be >= 1");
        Require(LossScaleWindow >= 1, "loss_scale_window", LossScaleWindow, "must be >= 1");
        Require(MaxSeqLen >= 2, "max_seq_len", MaxSeqLen, "must be >= 2");
        Require(LoraDim >= 0, "lora_dim", LoraDim, "must be >= 0 (0 = no LoRA)");
        if (LoraAlpha is { } la) Require(la > 0, "lora_alpha", la, "must be > 0");
        Require(!(LoraDim > 0 && LoraModuleName.Count == 0), "lora_module_name", "[]", "list at least one module name pattern when lora_dim > 0");
        Require(!(OnlyOptimizeLora && LoraDim == 0), "only_optimize_lora", OnlyOptimizeLora, "needs lora_dim > 0");
        Require(EvalFraction >= 0 && EvalFraction < 1, "eval_fraction", EvalFraction, "must be in [0, 1)");
        Require(EvalEverySteps >= 0, "eval_every_steps", EvalEverySteps, "must be >= 0 (0 = only per epoch)");
        Require(SaveEveryEpochs >= 0, "save_every_epochs", SaveEveryEpochs, "must be >= 0 (0 = only final)");
        Require(SaveEverySteps >= 0, "save_every_steps", SaveEverySteps, "must be >= 0");
        Require(VisionFeatureCacheMb >= 0, "vision_feature_cache_mb", VisionFeatureCacheMb, "must be >= 0 (0 = no feature cache)");
        Require(LogEverySteps >= 1, "log_every_steps", LogEverySteps, "must be >= 1");
        Require(OnNan is "stop" or "skip", "on_nan", OnNan, "stop or skip");
        Require(MaxNanSkipFraction >= 0 && MaxNanSkipFraction <= 1, "max_nan_skip_fraction", MaxNanSkipFraction, "must be in [0, 1]");
        Require(MaxSkipFraction >= 0 && MaxSkipFraction <= 1, "max_skip_fraction", MaxSkipFraction, "must be in [0, 1]");
        Require(!string.IsNullOrWhiteSpace(OutputDir), "output_dir", OutputDir, "must be a folder path");
        Require(!string.IsNullOrWhiteSpace(Resume), "resume", Resume, "none, auto or a checkpoint folder");
        Require(Distributed.ZeroStage is >= 0 and <= 3, "distributed.zero_stage", Distributed.ZeroStage, "0, 1, 2 or 3");
        Require(Distributed.BucketMb > 0 && Distributed.BucketMb <= 4096, "distributed.bucket_mb", Distributed.BucketMb, "must be in (0, 4096]");
    }

    /// <summary>Settings that do not change the data order, the model or the optimizer: a resumed run may change them.</summary>
    public static readonly IReadOnlySet<string> ResumeSafeKeys = new HashSet<string>(StringComparer.Ordinal) {
        "output_dir", "resume", "resume_force", "overwrite", "log_every_steps", "eval_every_steps", "save_every_epochs",
        "save_every_steps", "save_final", "device", "on_nan", "max_nan_skip_fraction", "max_skip_fraction",
        "per_device_eval_batch_size", "gradient_checkpointing", "distributed.zero_stage", "distributed.bucket_mb",
    };

    /// <summary>A copy whose file and folder paths are absolute (resolved against the current directory), so a
    /// checkpoint's stored config works from any working directory.</summary>
    public TrainingConfig WithAbsolutePaths()
    {
        var copy = JsonSerializer.Deserialize<TrainingConfig>(ToJson(), ReadOptions)!;
        static string? Full(string? path) => path is null || path.Length == 0 ? path : System.IO.Path.GetFullPath(path);
        copy.TrainData = Full(copy.TrainData);
        copy.EvalData = Full(copy.EvalData);
        copy.DataConfig = Full(copy.DataConfig);
        copy.OutputDir = Full(copy.OutputDir)!;
        copy.Model.Lm = Full(copy.Model.Lm);
        copy.Model.Vision = Full(copy.Model.Vision);
        copy.Model.Path = Full(copy.Model.Path);
        copy.Model.Config = Full(copy.Model.Config);
        copy.Model.Tokenizer = Full(copy.Model.Tokenizer);
        if (copy.Resume is not ("none" or "auto" or "")) copy.Resume = Full(copy.Resume)!;
        return copy;
    }

    /// <summary>Settings that differ between <paramref name="stored"/> and <paramref name="current"/> as
    /// (key, stored value, new value, safe to change on resume), keys flattened as in <c>--set</c>.</summary>
    public static IReadOnlyList<(string Key, string Stored, string Current, bool Safe)> Differences(TrainingConfig stored, TrainingConfig current)
    {
        var a = Flatten(JsonNode.Parse(stored.WithAbsolutePaths().ToJson())!.AsObject());
        var b = Flatten(JsonNode.Parse(current.WithAbsolutePaths().ToJson())!.AsObject());
        var differences = new List<(string, string, string, bool)>();
        foreach (var key in a.Keys.Union(b.Keys).Order(StringComparer.Ordinal))
        {
            var x = a.GetValueOrDefault(key) ?? "null";
            var y = b.GetValueOrDefault(key) ?? "null";
            if (x != y) differences.Add((key, x, y, ResumeSafeKeys.Contains(key)));
        }
        return differences;
    }

    static Dictionary<string, string> Flatten(JsonObject root, string prefix = "")
    {
        var flat = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in root)
        {
            if (value is JsonObject child) foreach (var (k, v) in Flatten(child, prefix + key + ".")) flat[k] = v;
            else flat[prefix + key] = value?.ToJsonString() ?? "null";
        }

        return flat;
    }

    /// <summary>Warmup steps out of num_warmup_steps or ceil(warmup_ratio · total), as HF's get_warmup_steps.</summary>
    public int WarmupSteps(int totalSteps) =>
        NumWarmupSteps is > 0 ? NumWarmupSteps.Value : (int)Math.Ceiling((WarmupRatio ?? 0) * totalSteps);
}
