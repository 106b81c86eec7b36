using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>
/// Runs a demo pretraining stage (tiny CLIP, tiny LLaMA) through the project's <see cref="Trainer{TBatch}"/>: its
/// AdamW, LR schedule, clipping and metrics.jsonl. The stage's data are drawn fresh every step (pictures and
/// conversations are free to generate), so one epoch of <c>steps</c> batches; no evaluation and no checkpoints (the
/// demo's stage cache keeps the result instead).
/// </summary>
public static class DemoPretraining
{
    /// <summary>The settings every pretraining stage shares, as the trainer's config: AdamW (0.9, 0.95), warm-up then
    /// cosine decay, gradient clipping at 1.</summary>
    public static TrainingConfig Config(DemoRecipe recipe, int steps, double learningRate, int seed, string runDir) => new()
    {
        LearningRate = learningRate, WeightDecay = recipe.WeightDecay, AdamBeta1 = 0.9, AdamBeta2 = 0.95,
        MaxSteps = steps, NumTrainEpochs = 1, LrSchedulerType = "cosine",
        NumWarmupSteps = Math.Max(0, Math.Min(recipe.WarmupSteps, steps / 4)), MaxGradNorm = 1.0, Seed = seed, Precision = "fp32",
        SaveEveryEpochs = 0, SaveFinal = false, OutputDir = runDir, LogEverySteps = 250,
    };

    /// <summary>Trains every parameter of <paramref name="module"/> on <paramref name="steps"/> batches made by
    /// <paramref name="batch"/>(step), with <paramref name="loss"/>(batch) as the loss; returns the last loss.</summary>
    public static float Train<TBatch>(TrainingConfig config, nn.Module module, int steps, Func<int, TBatch> batch, Func<TBatch, Tensor> loss,
        string label, TextWriter log)
    {
        foreach (var p in module.parameters()) p.requires_grad = true;
        using var trainer = new Trainer<Owned<TBatch>>(new Trainable<TBatch>(module, loss), new FreshBatches<TBatch>(steps, batch), config);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        trainer.Progress = m =>
        {
            if (m.Kind != "eval" && (m.Step % config.LogEverySteps == 1 || m.Step == m.TotalSteps))
                log.WriteLine($"  {label} step {m.Step,5}/{m.TotalSteps}: loss {m.Loss:F4} ({clock.Elapsed.TotalSeconds:F0} s)");
        };
        var summary = trainer.Run();
        foreach (var p in module.parameters()) p.requires_grad = false;
        module.eval();
        return (float)(summary.LastLoss ?? double.NaN);
    }

    /// <summary>Every parameter trains; the loss is the stage's own.</summary>
    sealed class Trainable<TBatch>(nn.Module module, Func<TBatch, Tensor> loss) : ITrainable<Owned<TBatch>>
    {
        public nn.Module Module => module;
        public bool IsDeclaredTrainable(string parameterName) => true;
        public bool IsPretrained(string parameterName) => false;
        public LossResult ComputeLoss(Owned<TBatch> batch) => new(loss(batch.Value), 0, 0);
        public IReadOnlyList<string> SampleIds(Owned<TBatch> batch) => [$"step batch {batch.Step}"];
    }

    /// <summary>A batch the trainer disposes after its step (tensors in it, if any).</summary>
    sealed record Owned<TBatch>(TBatch Value, int Step) : IDisposable
    {
        public void Dispose() => (Value as IDisposable)?.Dispose();
    }

    /// <summary>One epoch of freshly generated batches, made in step order.</summary>
    sealed class FreshBatches<TBatch>(int steps, Func<int, TBatch> batch) : ITrainingData<Owned<TBatch>>
    {
        public bool HasEval => false;
        public int BatchesPerEpoch(int epoch) => steps;
        public IEnumerable<Owned<TBatch>> TrainBatches(int epoch, int skip, CancellationToken cancellationToken)
        {
            for (int step = skip; step < steps; step++) yield return new Owned<TBatch>(batch(step), step);
        }
        public IEnumerable<Owned<TBatch>> EvalBatches(CancellationToken cancellationToken) => [];
    }
}
