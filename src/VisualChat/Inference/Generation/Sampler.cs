using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Inference.Generation;

/// <summary>
/// Turns next-token logits [B, vocab] into ids [B]: repetition penalty, then greedy or temperature / top-k / top-p
/// sampling, drawing from its own seeded generator so equal seeds give equal samples.
/// </summary>
public sealed class Sampler : IDisposable
{
    readonly GenerationOptions options;
    readonly torch.Generator generator;
    // Scalars are held (fields or using locals): TorchSharp does not keep them alive during the native call.
    static readonly Scalar NegativeInfinity = float.NegativeInfinity.ToScalar();
    static readonly Scalar False = false.ToScalar();

    public Sampler(GenerationOptions options)
    {
        options.Validate();
        this.options = options;
        generator = new torch.Generator(options.Seed);
    }

    public bool IsGreedy => options.Temperature == 0;

    /// <summary>HF RepetitionPenaltyLogitsProcessor over a [B, vocab] bool mask of ids already seen.</summary>
    public static Tensor ApplyRepetitionPenalty(Tensor logits, Tensor seen, double penalty)
    {
        if (penalty == 1.0) return logits;
        using var held = penalty.ToScalar();
        var penalized = where(logits.lt(TorchScalars.Zero), logits.mul(held), logits.div(held));
        return where(seen, penalized, logits);
    }

    /// <summary>HF TopKLogitsWarper: everything below the k-th largest logit becomes −∞.</summary>
    public static Tensor ApplyTopK(Tensor logits, int k)
    {
        if (k <= 0 || k >= logits.shape[^1]) return logits;
        var kth = logits.topk(k, dim: -1).values.narrow(-1, k - 1, 1);
        return logits.masked_fill(logits.lt(kth), NegativeInfinity);
    }

    /// <summary>HF TopPLogitsWarper: drop the least likely tokens whose total probability is ≤ 1 − p, keeping at least one.</summary>
    public static Tensor ApplyTopP(Tensor logits, double p)
    {
        if (p >= 1.0) return logits;
        var (sorted, indices) = logits.sort(dim: -1, descending: false);
        var cumulative = sorted.softmax(-1).cumsum(-1);
        using var threshold = (1 - p).ToScalar();
        var removeSorted = cumulative.le(threshold);
        removeSorted.narrow(-1, removeSorted.shape[^1] - 1, 1).fill_(False);
        var remove = removeSorted.scatter(-1, indices, removeSorted);
        return logits.masked_fill(remove, NegativeInfinity);
    }

    /// <param name="logits">[B, vocab] for the next position.</param>
    /// <param name="seen">[B, vocab] bool: ids in the prompt or generated so far (used by the repetition penalty).</param>
    public Tensor Sample(Tensor logits, Tensor seen)
    {
        using var scope = NewDisposeScope();
        var scores = ApplyRepetitionPenalty(logits.to(ScalarType.Float32), seen, options.RepetitionPenalty);
        if (IsGreedy) return scores.argmax(-1).MoveToOuterDisposeScope();
        using (var temperature = options.Temperature.ToScalar()) scores = scores.div(temperature);
        scores = ApplyTopK(scores, options.TopK);
        scores = ApplyTopP(scores, options.TopP);
        var probabilities = scores.softmax(-1);
        if (probabilities.device.type != DeviceType.CPU) probabilities = probabilities.cpu();
        return probabilities.multinomial(1, generator: generator).squeeze(-1).to(logits.device).MoveToOuterDisposeScope();
    }

    public void Dispose() => generator.Dispose();
}
