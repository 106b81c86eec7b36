using static TorchSharp.torch;

namespace VisualChat.Training;

/// <summary>Mean loss of one micro-batch plus what it covered (for throughput).</summary>
public sealed record LossResult(Tensor Loss, long Tokens, long Images);

/// <summary>A model the <see cref="Trainer{TBatch}"/> can train: its module tree, which parameters it declares
/// trainable by default, which are pretrained (they may get a separate LR), and the loss of a batch.</summary>
public interface ITrainable<in TBatch>
{
    nn.Module Module { get; }
    /// <summary>Trained in the default mode (VisualChat: projection + token embeddings).</summary>
    bool IsDeclaredTrainable(string parameterName);
    /// <summary>Loaded from a pretrained checkpoint (gets pretrained_learning_rate when set).</summary>
    bool IsPretrained(string parameterName);
    /// <summary>Mean loss over the batch's supervised tokens, in fp32 (the caller disposes it).</summary>
    LossResult ComputeLoss(TBatch batch);
    /// <summary>Ids of the batch's samples, named in NaN errors.</summary>
    IReadOnlyList<string> SampleIds(TBatch batch);
}

/// <summary>Batches for training and evaluation, deterministic for (seed, epoch).</summary>
public interface ITrainingData<TBatch> where TBatch : IDisposable
{
    int BatchesPerEpoch(int epoch);
    /// <summary>The batches of <paramref name="epoch"/> from index <paramref name="skip"/> on (resume).</summary>
    IEnumerable<TBatch> TrainBatches(int epoch, int skip, CancellationToken cancellationToken);
    IEnumerable<TBatch> EvalBatches(CancellationToken cancellationToken);
    bool HasEval { get; }
}

/// <summary>What the command line drives of a <see cref="Trainer{TBatch}"/>, whatever its batch type.</summary>
public interface ITrainer : IDisposable
{
    string RunDir { get; }
    int TotalSteps { get; }
    long GlobalStep { get; }
    TorchSharp.torch.ScalarType StorageDtype { get; }
    IReadOnlyList<string> TrainableNames { get; }
    Action<StepMetrics>? Progress { get; set; }
    Action<string>? Log { get; set; }
    TrainingSummary Run(CancellationToken cancellationToken = default);
}

/// <summary>Training data that drops samples it cannot load (undecodable image, bad record) instead of failing.</summary>
public interface ISkippedSamples
{
    /// <summary>"file#record: reason" of every distinct sample dropped so far.</summary>
    IReadOnlyCollection<string> SkippedSamples { get; }
    /// <summary>Training batches passed over so far because none of their samples loaded.</summary>
    int EmptyTrainBatches { get; }
}
