using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// The straightforward formulation of MMCA: two masked softmaxes over all keys with full [B, H, Lq, Lk] score tensors.
/// Kept as the reference the efficient <see cref="MultiModalCausalAttention"/> is tested and benchmarked against;
/// never used by the model.
/// </summary>
public static class DenseMultiModalCausalAttention
{
    public static Tensor Attend(Tensor query, Tensor key, Tensor value, Tensor keyModality)
    {
        using var scope = NewDisposeScope();
        long b = query.shape[0], h = query.shape[1], lq = query.shape[2], d = query.shape[3], lk = key.shape[2];
        long groups = h / key.shape[1];
        var k = key.repeat_interleave(groups, dim: 1);
        var v = value.repeat_interleave(groups, dim: 1);
        var scores = query.matmul(k.transpose(2, 3)) / Math.Sqrt(d);
        var modality = keyModality.to(ScalarType.Int64);
        var queryModality = modality.narrow(1, lk - lq, lq);
        var queryPosition = arange(lk - lq, lk, device: query.device).view(1, lq, 1);
        var keyPosition = arange(lk, device: query.device).view(1, 1, lk);
        var textQuery = queryModality.eq((long)TokenModality.Text).unsqueeze(2);
        var allowText = modality.eq((long)TokenModality.Text).unsqueeze(1)
            .logical_and(keyPosition.le(queryPosition)).logical_and(textQuery).unsqueeze(1);
        var allowImage = modality.eq((long)TokenModality.Image).unsqueeze(1)
            .logical_and(keyPosition.lt(queryPosition)).logical_and(textQuery).unsqueeze(1);
        Tensor Branch(Tensor allow) =>
            (scores.masked_fill(allow.logical_not(), -1e9).softmax(-1) * allow.to(query.dtype)).matmul(v);
        var own = v.narrow(2, lk - lq, lq) * queryModality.eq((long)TokenModality.Image).to(query.dtype).view(b, 1, lq, 1);
        return (Branch(allowText) + Branch(allowImage) + own).MoveToOuterDisposeScope();
    }
}
