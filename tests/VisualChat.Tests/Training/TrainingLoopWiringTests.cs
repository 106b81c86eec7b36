using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Tests.Training;

/// <summary>
/// The optimizer step's wiring checked against written-out arithmetic: clipping, gradient accumulation over
/// micro-batches, and the rescaling of a short last accumulation group. Samples all have the same length (8 targets,
/// no padding), so a mean over k micro-batches of b samples is exactly the mean over one batch of k·b.
/// </summary>
public class TrainingLoopWiringTests
{
    static List<TokenizedSample> EqualLengthSamples(int count, int offset = 0) =>
        Enumerable.Range(0, count).Select(i =>
            TextLmData.Sample(Enumerable.Range(0, 8).Select(t => 1 + (7 * (i + offset) + 3 * t) % 63).ToArray(), "equal.jsonl", i.ToString())).ToList();

    static TextLmData Data(int count, int batchSize) =>
        new(EqualLengthSamples(count), [], batchSize, 4, 1234, new Collator(0, 8));

    /// <summary>One optimizer step; returns the trained embedding, the logged gradient norm and the gradients seen
    /// right after backward (before unscaling and clipping).</summary>
    static (Tensor Weight, double GradNorm, Tensor RawGrad) OneStep(TrainingTestKit kit, TextLmData data, Action<TrainingConfig> edit)
    {
        using var model = TrainingTestKit.TinyModel();
        var config = kit.Config(c =>
        {
            c.NumTrainEpochs = 1; c.MaxSteps = 1; c.LrSchedulerType = "constant"; c.NumWarmupSteps = 0; c.WeightDecay = 0;
            c.SaveEveryEpochs = 0; c.SaveFinal = false;
            edit(c);
        });
        using var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), data, config);
        Tensor? raw = null;
        trainer.AfterBackward = (_, parameters) => raw = parameters.Single().Parameter.grad!.detach().clone().DetachFromDisposeScope();
        trainer.Run();
        var step = trainer.Metrics.History.Single(m => m.Kind == "train");
        var weight = model.state_dict()[LlamaLmTrainable.EmbeddingParameter].detach().clone().DetachFromDisposeScope();
        return (weight, step.GradNorm!.Value, raw!);
    }

    [Fact]
    public void ClippingScalesTheGradientToMaxGradNorm_BeforeTheAdamStep()
    {
        using var scope = NewDisposeScope();
        using var kit = new TrainingTestKit();
        using var initial = TrainingTestKit.TinyModel();
        var before = initial.state_dict()[LlamaLmTrainable.EmbeddingParameter].detach().clone();
        const double lr = 1e-2, maxNorm = 1e-4, eps = 1e-6;
        var (weight, gradNorm, raw) = OneStep(kit, Data(4, 4), c => { c.LearningRate = lr; c.MaxGradNorm = maxNorm; c.AdamEpsilon = eps; });

        double norm = raw.norm().item<float>();
        Assert.True(Math.Abs(norm - gradNorm) < 1e-4 * norm, $"logged grad_norm {gradNorm} vs ‖g‖ {norm}");
        Assert.True(norm > 10 * maxNorm, $"the test needs a gradient well above max_grad_norm (‖g‖ = {norm})");
        // First AdamW step with bias correction: m̂ = ĝ, √v̂ = |ĝ|, so Δ = −lr·ĝ/(|ĝ| + eps), ĝ = g·maxNorm/(‖g‖ + 1e-6).
        var clipped = raw.to(ScalarType.Float64) * (maxNorm / (norm + 1e-6));
        var expected = before.to(ScalarType.Float64) - lr * clipped / (clipped.abs() + eps);
        double gap = (weight.to(ScalarType.Float64) - expected).abs().max().item<double>();
        Assert.True(gap < 1e-6, $"trained embedding differs from the clipped AdamW step by {gap}");
    }

    [Fact]
    public void TwoMicroBatchesOfTwo_EqualOneBatchOfFour()
    {
        using var scope = NewDisposeScope();
        using var kit = new TrainingTestKit();
        var (whole, wholeNorm, _) = OneStep(kit, Data(4, 4), c => c.GradientAccumulationSteps = 1);
        using var kit2 = new TrainingTestKit();
        var (accumulated, accumulatedNorm, _) = OneStep(kit2, Data(4, 2), c => c.GradientAccumulationSteps = 2);
        Assert.True(Math.Abs(wholeNorm - accumulatedNorm) < 1e-4 * wholeNorm, $"grad_norm: one batch of 4 {wholeNorm}, 2 × 2 accumulated {accumulatedNorm}");
        double gap = (whole - accumulated).abs().max().item<float>();
        Assert.True(gap < 1e-6, $"weights after one step differ by {gap}");
    }

    [Fact]
    public void AShortLastAccumulationGroupIsRescaledToATrueMean()
    {
        using var scope = NewDisposeScope();
        // One batch per epoch with gradient_accumulation_steps 4: the only step has 1 of 4 micro-batches, and its
        // gradient must be that batch's mean gradient, as with no accumulation at all.
        using var kit = new TrainingTestKit();
        var (plain, plainNorm, _) = OneStep(kit, Data(2, 2), c => c.GradientAccumulationSteps = 1);
        using var kit2 = new TrainingTestKit();
        var (shortGroup, shortNorm, _) = OneStep(kit2, Data(2, 2), c => c.GradientAccumulationSteps = 4);
        Assert.True(Math.Abs(plainNorm - shortNorm) < 1e-4 * plainNorm, $"grad_norm without accumulation {plainNorm}, short group of 1/4 {shortNorm}");
        double gap = (plain - shortGroup).abs().max().item<float>();
        Assert.True(gap < 1e-6, $"weights after one step differ by {gap}");
    }
}
