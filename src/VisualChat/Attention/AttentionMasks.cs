using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>Boolean attention masks (true = may attend), shaped [B or 1, 1, Lq, Lk] for SDPA.</summary>
public static class AttentionMasks
{
    /// <summary>
    /// Causal by cache slot: query i (slot past+i) sees slots ≤ past+i that are not padding. A query always sees its own
    /// slot, so padded query rows never become all-false (SDPA would return NaN for them).
    /// </summary>
    public static Tensor Causal(long queryLength, long pastLength, Tensor? keyPaddingMask, Device device)
    {
        using var scope = NewDisposeScope();
        long keyLength = pastLength + queryLength;
        // Scalars held (TorchScalars, using locals): TorchSharp does not keep them alive during the native call.
        using var start = pastLength.ToScalar();
        using var stop = keyLength.ToScalar();
        var querySlots = arange(start, stop, TorchScalars.One, dtype: ScalarType.Int64, device: device).unsqueeze(1); // [Lq, 1]
        var keySlots = arange(TorchScalars.Zero, stop, TorchScalars.One, dtype: ScalarType.Int64, device: device).unsqueeze(0);            // [1, Lk]
        var mask = keySlots.le(querySlots);                                                                  // [Lq, Lk]
        if (keyPaddingMask is null) return mask.view(1, 1, queryLength, keyLength).MoveToOuterDisposeScope();
        if (keyPaddingMask.shape[^1] != keyLength)
            throw new ArgumentException($"key padding mask covers {keyPaddingMask.shape[^1]} positions but attention needs {keyLength} (cached {pastLength} + new {queryLength}).", nameof(keyPaddingMask));
        var padding = keyPaddingMask.to(ScalarType.Bool).unsqueeze(1).unsqueeze(1);                          // [B, 1, 1, Lk]
        var self = keySlots.eq(querySlots);
        var full = mask.unsqueeze(0).unsqueeze(0).logical_and(padding).logical_or(self);
        return full.MoveToOuterDisposeScope();
    }
}
