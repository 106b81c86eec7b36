using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace VisualChat.Training;

/// <summary>One line of metrics.jsonl: an optimizer step, or an evaluation (Kind = "eval").</summary>
public sealed record StepMetrics
{
    [JsonPropertyName("kind")] public string Kind { get; init; } = "train";
    [JsonPropertyName("step")] public long Step { get; init; }
    [JsonPropertyName("epoch")] public double Epoch { get; init; }
    [JsonPropertyName("loss")] public double? Loss { get; init; }
    [JsonPropertyName("lr")] public double? LearningRate { get; init; }
    [JsonPropertyName("grad_norm")] public double? GradNorm { get; init; }
    [JsonPropertyName("tokens_per_s")] public double? TokensPerSecond { get; init; }
    [JsonPropertyName("images_per_s")] public double? ImagesPerSecond { get; init; }
    [JsonPropertyName("eval_loss")] public double? EvalLoss { get; init; }
    [JsonPropertyName("loss_scale")] public double? LossScale { get; init; }
    /// <summary>Optimizer steps skipped so far (overflow) and micro-batches skipped (NaN loss with on_nan: skip).</summary>
    [JsonPropertyName("skipped")] public long Skipped { get; init; }
    [JsonPropertyName("skipped_batches")] public long SkippedBatches { get; init; }
    /// <summary>Distinct samples dropped so far because they could not be loaded (undecodable image, bad record).</summary>
    [JsonPropertyName("skipped_samples")] public long SkippedSamples { get; init; }
    [JsonPropertyName("total_steps")] public long TotalSteps { get; init; }
    [JsonPropertyName("eta_s")] public double? EtaSeconds { get; init; }

    static readonly JsonSerializerOptions Options = new() { DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    public string ToJson() => JsonSerializer.Serialize(this, Options);

    public static StepMetrics Parse(string line) => JsonSerializer.Deserialize<StepMetrics>(line, Options)!;

    public string ToLogLine() => Kind == "eval"
        ? string.Create(CultureInfo.InvariantCulture, $"eval  step {Step}  epoch {Epoch:F2}  eval_loss {EvalLoss:F4}")
        : string.Create(CultureInfo.InvariantCulture,
            $"step {Step}/{TotalSteps}  epoch {Epoch:F2}  loss {Loss:F4}  lr {LearningRate:E2}  grad_norm {GradNorm:F3}  tok/s {TokensPerSecond:F0}  img/s {ImagesPerSecond:F1}  scale {LossScale:G}  skipped {Skipped}/{SkippedBatches}/{SkippedSamples}  eta {FormatEta(EtaSeconds)}");

    static string FormatEta(double? seconds) => seconds is { } s && double.IsFinite(s) ? TimeSpan.FromSeconds(Math.Round(s)).ToString() : "?";
}

/// <summary>Appends metrics to <c>metrics.jsonl</c> (flushed per line so a crash keeps what was logged).</summary>
public sealed class MetricsLog(string path)
{
    public string Path { get; } = path;
    public List<StepMetrics> History { get; } = Load(path);

    static List<StepMetrics> Load(string path) =>
        File.Exists(path) ? File.ReadAllLines(path).Where(l => l.Length > 0).Select(StepMetrics.Parse).ToList() : [];

    public void Append(StepMetrics metrics)
    {
        History.Add(metrics);
        File.AppendAllText(Path, metrics.ToJson() + "\n");
    }

    /// <summary>Drops records after <paramref name="step"/> (a resumed run re-logs them).</summary>
    public void TruncateAfter(long step)
    {
        if (History.RemoveAll(m => m.Step > step) > 0)
            File.WriteAllLines(Path, History.Select(m => m.ToJson()));
    }
}
