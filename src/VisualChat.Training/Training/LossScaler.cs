namespace VisualChat.Training;

/// <summary>
/// Dynamic loss scaling for fp16 (as torch.cuda.amp.GradScaler / DeepSpeed): the loss is multiplied by <see cref="Scale"/>
/// before backward; a step whose unscaled gradients hold inf/NaN is skipped and the scale multiplied by
/// <see cref="BackoffFactor"/>; after <see cref="GrowthInterval"/> good steps in a row it is multiplied by
/// <see cref="GrowthFactor"/>. Disabled (scale 1, never skips on its own) for fp32 and bf16.
/// </summary>
public sealed class LossScaler(bool enabled, double initialScale = 65536, int growthInterval = 2000, double growthFactor = 2.0, double backoffFactor = 0.5)
{
    public bool Enabled { get; } = enabled;
    public double Scale { get; private set; } = enabled ? initialScale : 1.0;
    public int GrowthInterval { get; } = growthInterval;
    public double GrowthFactor { get; } = growthFactor;
    public double BackoffFactor { get; } = backoffFactor;
    public int GoodSteps { get; private set; }
    public int SkippedSteps { get; private set; }

    /// <summary>Records one step's outcome; returns true when the optimizer may step.</summary>
    public bool Update(bool gradientsFinite)
    {
        if (!Enabled) return gradientsFinite;
        if (!gradientsFinite)
        {
            Scale = Math.Max(1.0, Scale * BackoffFactor);
            GoodSteps = 0;
            SkippedSteps++;
            return false;
        }
        if (++GoodSteps >= GrowthInterval)
        {
            Scale *= GrowthFactor;
            GoodSteps = 0;
        }
        return true;
    }

    public void Restore(double scale, int goodSteps, int skippedSteps)
    {
        Scale = Enabled ? scale : 1.0;
        GoodSteps = goodSteps;
        SkippedSteps = skippedSteps;
    }
}
