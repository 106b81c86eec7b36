using VisualChat.Data.Synthetic;
using VisualChat.Demo;
using VisualChat.Model;

namespace VisualChat.Benchmarks.Ablation;

/// <summary>Answer-token cross entropy on the held-out set after <paramref name="Step"/> training steps.</summary>
public sealed record EvalLossPoint(int Step, double Loss);

/// <summary>What the pretraining of one seed produced: the encoder's probe accuracies and the LM's last training loss.</summary>
public sealed record AblationPretraining(int Seed, VisionReport Vision, double LmFinalLoss, double VisionSeconds, double LmSeconds);

/// <summary>One attention mode trained with one seed's budget.</summary>
public sealed record AblationRun(
    AttentionMode Mode,
    int Seed,
    IReadOnlyList<EvalLossPoint> EvalLoss,
    IReadOnlyDictionary<ShapesQuestion, double> AccuracyPerKind,
    IReadOnlyDictionary<ShapesQuestion, int> RoundsPerKind,
    double Accuracy,
    double FinalTrainLoss,
    long TrainableParameters,
    double Seconds)
{
    public string ModeName => VisualChatConfig.AttentionModeToName(Mode);
    public double FinalEvalLoss => EvalLoss[^1].Loss;
}

/// <summary>Mean and sample standard deviation (n − 1; 0 for a single value) of one quantity over seeds.</summary>
public readonly record struct MeanStd(double Mean, double Std, double Min, double Max)
{
    public static MeanStd Of(IReadOnlyCollection<double> values)
    {
        if (values.Count == 0) return new MeanStd(double.NaN, double.NaN, double.NaN, double.NaN);
        double mean = values.Average();
        double std = values.Count < 2 ? 0 : Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1));
        return new MeanStd(mean, std, values.Min(), values.Max());
    }
}

/// <summary>One mode over all seeds.</summary>
public sealed record AblationModeSummary(
    AttentionMode Mode,
    MeanStd Accuracy,
    IReadOnlyDictionary<ShapesQuestion, MeanStd> AccuracyPerKind,
    MeanStd FinalEvalLoss,
    IReadOnlyList<int> Steps,
    IReadOnlyList<MeanStd> EvalLoss)
{
    public string ModeName => VisualChatConfig.AttentionModeToName(Mode);

    public static AblationModeSummary Of(AttentionMode mode, IReadOnlyList<AblationRun> runs)
    {
        var mine = runs.Where(r => r.Mode == mode).ToArray();
        var steps = mine[0].EvalLoss.Select(p => p.Step).ToArray();
        return new AblationModeSummary(
            mode,
            MeanStd.Of(mine.Select(r => r.Accuracy).ToArray()),
            Enum.GetValues<ShapesQuestion>().ToDictionary(k => k,
                k => MeanStd.Of(mine.Where(r => r.AccuracyPerKind.ContainsKey(k)).Select(r => r.AccuracyPerKind[k]).ToArray())),
            MeanStd.Of(mine.Select(r => r.FinalEvalLoss).ToArray()),
            steps,
            steps.Select((_, i) => MeanStd.Of(mine.Select(r => r.EvalLoss[i].Loss).ToArray())).ToArray());
    }
}

/// <summary>Everything <c>vchat bench ablation</c> measured.</summary>
public sealed record AblationResult(
    AblationSettings Settings,
    string Machine,
    IReadOnlyList<AblationPretraining> Pretraining,
    IReadOnlyList<AblationRun> Runs,
    double WallSeconds)
{
    public IReadOnlyList<AblationModeSummary> Summaries =>
        Settings.Modes.Select(m => AblationModeSummary.Of(m, Runs)).ToArray();
}
