using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// Index structures for <see cref="MultiModalCausalAttention"/>, built once per forward pass from the per-position
/// modality of the keys (cached + new) and shared by all layers. Memory is O(B·L) for indices plus two boolean masks
/// of text-queries × text-keys (only with a KV cache) and text-queries × image-keys; nothing of B×H×L×L.
/// </summary>
/// <remarks>
/// The indices are computed on the host from one copy of the modality map (a handful of O(B·L) loops beats a chain of
/// small tensor ops), and address rows of the [B·L, H·D] view of queries, keys and values, so gathering and
/// scattering are contiguous row copies.
/// </remarks>
public sealed class MmcaPlan : IDisposable
{
    public long Batch { get; }
    /// <summary>The attention's compute dtype, that of the float multipliers.</summary>
    public ScalarType DType { get; }
    public long QueryLength { get; }
    public long KeyLength { get; }
    /// <summary>Compact width: the most text queries of any row.</summary>
    public long TextQueryCount { get; }
    /// <summary>Compact width: the most text keys of any row.</summary>
    public long TextKeyCount { get; }
    /// <summary>Compact width: the most image keys of any row.</summary>
    public long ImageKeyCount { get; }

    /// <summary>[B·Tq]: rows of the [B·Lq, ·] query view holding text queries, packed left per batch row; the padding
    /// entries repeat a valid row and are zeroed through <see cref="TextQueryValid"/>.</summary>
    public Tensor TextQueryRows { get; }
    /// <summary>[B, 1, Tq, 1] float: 1 where the compact entry is a real text query.</summary>
    public Tensor TextQueryValid { get; }
    /// <summary>[B·Tk]: rows of the [B·Lk, ·] key view holding text keys.</summary>
    public Tensor TextKeyRows { get; }
    /// <summary>[B, 1, Tq, Tk] bool, or null when queries and keys coincide (no cache) so plain causal attention applies.</summary>
    public Tensor? TextToTextMask { get; }
    /// <summary>[B·Ti]: rows of the key view holding image keys.</summary>
    public Tensor? ImageKeyRows { get; }
    /// <summary>[B, 1, Tq, Ti] bool: image key strictly before the text query. Rows without any such key are opened
    /// fully (keeping the softmax finite) and then zeroed through <see cref="TextSeesImage"/>.</summary>
    public Tensor? TextToImageMask { get; }
    /// <summary>[B, 1, Tq, 1] float: 1 where the text query has at least one earlier image key.</summary>
    public Tensor? TextSeesImage { get; }
    /// <summary>[B, 1, Lq, 1] float: 1 where the query is an image token.</summary>
    public Tensor QueryIsImage { get; }

    readonly List<Tensor> _owned = new();

    /// <param name="keyModality">[B, Lk] <see cref="TokenModality"/> values of every key position (cached then new).</param>
    /// <param name="queryLength">How many of the last key positions are queries in this call.</param>
    /// <param name="dtype">Compute dtype of the attention (for the float multipliers).</param>
    public MmcaPlan(Tensor keyModality, long queryLength, ScalarType dtype = ScalarType.Float32)
    {
        if (keyModality.dim() != 2)
            throw new ArgumentException($"keyModality must be [batch, keys], got [{string.Join(", ", keyModality.shape)}].");
        long batch = keyModality.shape[0], keys = keyModality.shape[1];
        if (queryLength < 1 || queryLength > keys)
            throw new ArgumentOutOfRangeException(nameof(queryLength), $"must be in 1..{keys}, got {queryLength}.");
        Batch = batch;
        DType = dtype;
        QueryLength = queryLength;
        KeyLength = keys;
        var device = keyModality.device;
        long offset = keys - queryLength;

        long[] modality;
        using (var host = keyModality.to(ScalarType.Int64).cpu().contiguous()) modality = host.data<long>().ToArray();

        // Per batch row: absolute positions of text keys, image keys, and text queries, in order.
        var textKeys = new List<long>[batch];
        var imageKeys = new List<long>[batch];
        var textQueries = new List<long>[batch];
        var queryIsImage = new float[batch * queryLength];
        for (long b = 0; b < batch; b++)
        {
            textKeys[b] = []; imageKeys[b] = []; textQueries[b] = [];
            for (long j = 0; j < keys; j++)
            {
                long m = modality[b * keys + j];
                if (m == (long)TokenModality.Text)
                {
                    textKeys[b].Add(j);
                    if (j >= offset) textQueries[b].Add(j);
                }
                else if (m == (long)TokenModality.Image)
                {
                    imageKeys[b].Add(j);
                    if (j >= offset) queryIsImage[b * queryLength + j - offset] = 1f;
                }
            }
        }
        TextQueryCount = textQueries.Max(l => (long)l.Count);
        TextKeyCount = textKeys.Max(l => (long)l.Count);
        ImageKeyCount = imageKeys.Max(l => (long)l.Count);

        using var temporaries = NewDisposeScope();
        Tensor Own(Tensor t) { _owned.Add(t.DetachFromDisposeScope()); return t; }

        var (queryRows, queryPositions, queryValid) = Pack(textQueries, TextQueryCount, queryLength, p => p - offset);
        TextQueryRows = Own(tensor(queryRows, device: device));
        TextQueryValid = Own(tensor(queryValid, device: device).view(batch, 1, TextQueryCount, 1).to(dtype));
        QueryIsImage = Own(tensor(queryIsImage, device: device).view(batch, 1, queryLength, 1).to(dtype));
        var (keyRows, keyPositions, keyValid) = Pack(textKeys, TextKeyCount, keys, p => p);
        TextKeyRows = Own(tensor(keyRows, device: device));

        var textQueryPosition = tensor(queryPositions, device: device).view(batch, TextQueryCount, 1);
        var invalidQuery = tensor(queryValid, device: device).view(batch, TextQueryCount, 1).eq(TorchScalars.Zero);
        if (queryLength != keys)
        {
            var textKeyPosition = tensor(keyPositions, device: device).view(batch, 1, TextKeyCount);
            var textKeyValid = tensor(keyValid, device: device).view(batch, 1, TextKeyCount).ne(TorchScalars.Zero);
            var allowed = textKeyPosition.le(textQueryPosition).logical_and(textKeyValid);
            TextToTextMask = Own(allowed.logical_or(invalidQuery).unsqueeze(1));
        }
        if (ImageKeyCount > 0)
        {
            var (imageRows, imagePositions, imageValid) = Pack(imageKeys, ImageKeyCount, keys, p => p);
            ImageKeyRows = Own(tensor(imageRows, device: device));
            var imageKeyPosition = tensor(imagePositions, device: device).view(batch, 1, ImageKeyCount);
            var imageKeyValid = tensor(imageValid, device: device).view(batch, 1, ImageKeyCount).ne(TorchScalars.Zero);
            var allowed = imageKeyPosition.lt(textQueryPosition).logical_and(imageKeyValid);
            var seesImage = allowed.any(-1, keepdim: true);
            TextToImageMask = Own(allowed.logical_or(seesImage.logical_not()).unsqueeze(1));
            TextSeesImage = Own(seesImage.to(dtype).unsqueeze(1));
        }
    }

    /// <summary>Packs per-row position lists to a fixed width: flat row indices into a [B·length, ·] view (padding
    /// repeats the row's first entry, or row 0 of its batch element when empty), absolute positions (padding: -1 so it
    /// precedes nothing) and validity flags.</summary>
    static (long[] Rows, long[] Positions, float[] Valid) Pack(List<long>[] lists, long width, long length, Func<long, long> toLocal)
    {
        long batch = lists.Length;
        var rows = new long[batch * width];
        var positions = new long[batch * width];
        var valid = new float[batch * width];
        for (long b = 0; b < batch; b++)
        {
            var list = lists[b];
            long fallback = b * length + (list.Count > 0 ? toLocal(list[0]) : 0);
            for (long i = 0; i < width; i++)
            {
                long at = b * width + i;
                if (i < list.Count)
                {
                    rows[at] = b * length + toLocal(list[(int)i]);
                    positions[at] = list[(int)i];
                    valid[at] = 1f;
                }
                else
                {
                    rows[at] = fallback;
                    positions[at] = -1;
                }
            }
        }
        return (rows, positions, valid);
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}
