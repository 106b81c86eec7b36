using TorchSharp;
using VisualChat.Conversations;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// The one training loss: HF's causal-LM loss, position t predicting label t + 1, summed over targets ≠ -100 and
/// divided by their count (at least 1, so a batch without targets gives exactly 0 with a valid graph).
/// </summary>
/// <remarks>Given hidden states and the head weight, only the positions that have a target go through the head and
/// the softmax: answers are a small share of a conversation's tokens, so training skips most of the vocabulary
/// projection. Per row it is the same computation as full logits followed by the loss.</remarks>
public static class CausalLMLoss
{
    static readonly Scalar IgnoreLabel = ConversationTemplate.IgnoreLabel.ToScalar();   // held: see TorchScalars

    /// <param name="states">[B, L, X]: logits (X = vocab) when <paramref name="headWeight"/> is null, else hidden states
    /// (X = hidden) that <paramref name="headWeight"/> [vocab, hidden] maps to logits.</param>
    /// <param name="labels">[B, L]; -100 where there is no target.</param>
    public static (Tensor Loss, long Targets) Shifted(Tensor states, Tensor labels, Tensor? headWeight = null)
    {
        using var scope = NewDisposeScope();
        long length = states.shape[1], width = states.shape[2];
        if (length < 2) return (states.sum().mul(TorchScalars.Zero).MoveToOuterDisposeScope(), 0);
        var rows = states.narrow(1, 0, length - 1).reshape(-1, width);
        var targets = labels.narrow(1, 1, length - 1).reshape(-1).to(states.device);
        var positions = targets.ne(IgnoreLabel).nonzero().reshape(-1);
        long count = positions.shape[0];
        if (count == 0) return (rows.sum().mul(TorchScalars.Zero).MoveToOuterDisposeScope(), 0);
        var picked = rows.index_select(0, positions);
        var logits = (headWeight is null ? picked : nn.functional.linear(picked, headWeight)).to(ScalarType.Float32);
        var total = nn.functional.cross_entropy(logits, targets.index_select(0, positions), reduction: nn.Reduction.Sum);
        using var divisor = count.ToScalar();
        return (total.div(divisor).MoveToOuterDisposeScope(), count);
    }
}
