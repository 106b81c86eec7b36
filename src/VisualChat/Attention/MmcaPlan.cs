using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// Index structures for <see cref="MultiModalCausalAttention"/>, built once per forward pass from the per-position
/// modality of the keys (cached + new) and shared by all layers. Memory is O(B·L) for indices plus two boolean masks
/// of text-queries × text-keys (only with a KV cache) and text-queries × image-keys; nothing of B×H×L×L.
/// </summary>
public sealed class MmcaPlan : IDisposable
{
    public long QueryLength { get; }
    public long KeyLength { get; }
    public long TextQueryCount { get; }
    public long ImageKeyCount { get; }

    /// <summary>[B, Tq]: query positions of text tokens, in order; rows padded with non-text positions.</summary>
    public Tensor TextQueryIndex { get; }
    /// <summary>[B, 1, Tq, 1] float: 1 where the compact entry is a real text query.</summary>
    public Tensor TextQueryValid { get; }
    /// <summary>[B, Tk]: key positions of text tokens, in order.</summary>
    public Tensor TextKeyIndex { get; }
    /// <summary>[B, 1, Tq, Tk] bool, or null when queries and keys coincide (no cache) so plain causal attention applies.</summary>
    public Tensor? TextToTextMask { get; }
    /// <summary>[B, Ti]: key positions of image tokens.</summary>
    public Tensor? ImageKeyIndex { get; }
    /// <summary>[B, 1, Tq, Ti] bool: image key strictly before the text query. Rows without any such key are opened
    /// fully (keeping the softmax finite) and then zeroed through <see cref="TextSeesImage"/>.</summary>
    public Tensor? TextToImageMask { get; }
    /// <summary>[B, 1, Tq, 1] float: 1 where the text query has at least one earlier image key.</summary>
    public Tensor? TextSeesImage { get; }
    /// <summary>[B, 1, Lq, 1] float: 1 where the query is an image token.</summary>
    public Tensor QueryIsImage { get; }

    readonly List<Tensor> _owned = new();

    /// <param name="keyModality">[B, Lk] int64 <see cref="TokenModality"/> values of every key position (cached then new).</param>
    /// <param name="queryLength">How many of the last key positions are queries in this call.</param>
    /// <param name="dtype">Compute dtype of the attention (for the float multipliers).</param>
    public MmcaPlan(Tensor keyModality, long queryLength, ScalarType dtype = ScalarType.Float32)
    {
        if (keyModality.dim() != 2)
            throw new ArgumentException($"keyModality must be [batch, keys], got [{string.Join(", ", keyModality.shape)}].");
        long batch = keyModality.shape[0], keys = keyModality.shape[1];
        if (queryLength < 1 || queryLength > keys)
            throw new ArgumentOutOfRangeException(nameof(queryLength), $"must be in 1..{keys}, got {queryLength}.");
        QueryLength = queryLength;
        KeyLength = keys;
        var device = keyModality.device;

        using var temporaries = NewDisposeScope();
        var modality = keyModality.to(ScalarType.Int64);
        var queryModality = modality.narrow(1, keys - queryLength, queryLength);
        var queryPositions = arange(keys - queryLength, keys, device: device);
        var keyPositions = arange(keys, device: device);

        var (textQueryIndex, textQueryValid, textQueryCount) = Compact(queryModality.eq((long)TokenModality.Text));
        var (textKeyIndex, textKeyValid, _) = Compact(modality.eq((long)TokenModality.Text));
        var (imageKeyIndex, imageKeyValid, imageKeyCount) = Compact(modality.eq((long)TokenModality.Image));
        TextQueryCount = textQueryCount;
        ImageKeyCount = imageKeyCount;

        TextQueryIndex = textQueryIndex;
        TextKeyIndex = textKeyIndex;
        TextQueryValid = textQueryValid.to(dtype).unsqueeze(1).unsqueeze(3);
        QueryIsImage = queryModality.eq((long)TokenModality.Image).to(dtype).unsqueeze(1).unsqueeze(3);

        var textQueryPosition = queryPositions[textQueryIndex];        // [B, Tq] absolute positions
        var invalidQuery = textQueryValid.logical_not().unsqueeze(2);  // [B, Tq, 1]
        if (queryLength != keys)
        {
            var textKeyPosition = keyPositions[textKeyIndex];
            var allowed = textKeyPosition.unsqueeze(1).le(textQueryPosition.unsqueeze(2)).logical_and(textKeyValid.unsqueeze(1));
            TextToTextMask = allowed.logical_or(invalidQuery).unsqueeze(1);
        }
        if (imageKeyCount > 0)
        {
            var imageKeyPosition = keyPositions[imageKeyIndex];
            var allowed = imageKeyPosition.unsqueeze(1).lt(textQueryPosition.unsqueeze(2)).logical_and(imageKeyValid.unsqueeze(1));
            var seesImage = allowed.any(-1, keepdim: true);                // [B, Tq, 1]
            ImageKeyIndex = imageKeyIndex;
            TextToImageMask = allowed.logical_or(seesImage.logical_not()).unsqueeze(1);
            TextSeesImage = seesImage.to(dtype).unsqueeze(1);
        }
        foreach (var t in new[] { TextQueryIndex, TextKeyIndex, TextQueryValid, QueryIsImage, TextToTextMask, ImageKeyIndex, TextToImageMask, TextSeesImage })
            if (t is not null) _owned.Add(t.DetachFromDisposeScope());
    }

    /// <summary>Positions where <paramref name="selected"/> is true, in order, packed to the left of each row; the
    /// rest of a row is filled with the unselected positions so every index stays valid.</summary>
    static (Tensor Index, Tensor Valid, long Count) Compact(Tensor selected)
    {
        long length = selected.shape[1];
        var positions = arange(length, device: selected.device).unsqueeze(0);
        var sortKey = where(selected, positions, positions + length);
        var counts = selected.sum(1);
        long width = counts.max().item<long>();
        var index = sortKey.argsort(1).narrow(1, 0, width);
        var valid = arange(width, device: selected.device).unsqueeze(0).lt(counts.unsqueeze(1));
        return (index, valid, width);
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}
