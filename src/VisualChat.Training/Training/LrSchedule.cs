namespace VisualChat.Training;

/// <summary>The LR multipliers of HF transformers' get_scheduler (LambdaLR): the multiplier for optimizer step
/// <c>k</c> (0-based, number of steps already taken) — so with warmup the first step runs at LR 0, as in HF.</summary>
public sealed class LrSchedule(string type, int warmupSteps, int totalSteps)
{
    public string Type { get; } = TrainingConfig.Schedules.Contains(type) ? type
        : throw new TrainingConfigException($"Training config key 'lr_scheduler_type' = {type} is out of range: one of {string.Join(", ", TrainingConfig.Schedules)}.");
    public int WarmupSteps { get; } = warmupSteps;
    public int TotalSteps { get; } = totalSteps;

    public double Multiplier(int step)
    {
        if (Type == "constant") return 1.0;
        if (step < WarmupSteps) return step / (double)Math.Max(1, WarmupSteps);
        return Type switch {
            "constant_with_warmup" => 1.0,
            "linear" => Math.Max(0.0, (TotalSteps - step) / (double)Math.Max(1, TotalSteps - WarmupSteps)),
            // num_cycles = 0.5: one half cosine from 1 to 0.
            _ => Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * 0.5 * 2.0 * ((step - WarmupSteps) / (double)Math.Max(1, TotalSteps - WarmupSteps))))),
        };
    }
}
