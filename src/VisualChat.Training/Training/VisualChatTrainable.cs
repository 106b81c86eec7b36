using VisualChat.Data;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Training;

/// <summary>A collated batch plus its images decoded and preprocessed (sample by sample, in order) by the prefetcher.</summary>
public sealed class VisualChatTrainingBatch(TrainingBatch batch, Tensor? pixels, IReadOnlyList<string> imageKeys) : IDisposable
{
    public TrainingBatch Batch { get; } = batch;
    /// <summary>[N, 3, S, S] for the N images of the batch, or null for a text-only batch.</summary>
    public Tensor? Pixels { get; } = pixels;
    /// <summary>Content keys of the images (feature-cache keys).</summary>
    public IReadOnlyList<string> ImageKeys { get; } = imageKeys;

    /// <summary>The batch as <see cref="VisualChatModel.forward"/> takes it.</summary>
    public VisualChatBatch ToModelInput() => Batch.ToModelInput(Pixels, ImageKeys);

    public void Dispose()
    {
        Batch.Dispose();
        Pixels?.Dispose();
    }
}

/// <summary>
/// The DeepSpeed-VisualChat recipe as a trainable: the model's default trainable set (projection + token embeddings,
/// plus cross-attention in <c>causal+cross</c>) unless the run unfreezes more; the LM and the vision encoder are the
/// pretrained parts (they get <c>pretrained_learning_rate</c> when set — the embeddings among them).
/// </summary>
public sealed class VisualChatTrainable(VisualChatModel model) : ITrainable<VisualChatTrainingBatch>
{
    readonly HashSet<string> _declared = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToHashSet();

    public VisualChatModel Model { get; } = model;
    public nn.Module Module => Model;

    public bool IsDeclaredTrainable(string parameterName) => _declared.Contains(parameterName);

    public bool IsPretrained(string parameterName) =>
        !ParameterSelection.IsLoraParameter(parameterName) && (parameterName.StartsWith("lm.", StringComparison.Ordinal) || parameterName.StartsWith("vision.", StringComparison.Ordinal));

    public LossResult ComputeLoss(VisualChatTrainingBatch batch)
    {
        using var scope = NewDisposeScope();
        var (loss, answerTokens) = Model.Loss(batch.ToModelInput());
        long images = batch.Batch.Images.Sum(i => i.Count);
        return new LossResult(loss.to(ScalarType.Float32).MoveToOuterDisposeScope(), answerTokens, images);
    }

    public IReadOnlyList<string> SampleIds(VisualChatTrainingBatch batch) =>
        batch.Batch.Samples.Select(s => string.Join("+", s.Source.SourceIds.Select(id => id.ToString()))).ToList();
}

/// <summary>The data pipeline's batches as the model takes them.</summary>
public static class TrainingBatchExtensions
{
    /// <summary>The collated batch plus the pixels of its images (sample by sample, in order).</summary>
    public static VisualChatBatch ToModelInput(this TrainingBatch batch, Tensor? pixels, IReadOnlyList<string>? imageKeys = null) =>
        new(batch.InputIds, batch.Labels, batch.AttentionMask, batch.Images.Select(i => i.Count).ToArray(), pixels, imageKeys);
}
