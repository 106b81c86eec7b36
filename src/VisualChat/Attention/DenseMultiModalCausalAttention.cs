using TorchSharp;
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
        // Scalars held (TorchScalars, using locals): TorchSharp does not keep them alive during the native call.
        using var sqrtD = Math.Sqrt(d).ToScalar();
        using var queryStart = (lk - lq).ToScalar();
        using var keyLength = lk.ToScalar();
        var scores = query.matmul(k.transpose(2, 3)).div(sqrtD);
        var modality = keyModality.to(ScalarType.Int64);
        var queryModality = modality.narrow(1, lk - lq, lq);
        var queryPosition = arange(queryStart, keyLength, TorchScalars.One, device: query.device).view(1, lq, 1);
        var keyPosition = arange(TorchScalars.Zero, keyLength, TorchScalars.One, device: query.device).view(1, 1, lk);
        var textQuery = queryModality.eq(TokenModalityScalars.Text).unsqueeze(2);
        var allowText = modality.eq(TokenModalityScalars.Text).unsqueeze(1)
            .logical_and(keyPosition.le(queryPosition)).logical_and(textQuery).unsqueeze(1);
        var allowImage = modality.eq(TokenModalityScalars.Image).unsqueeze(1)
            .logical_and(keyPosition.lt(queryPosition)).logical_and(textQuery).unsqueeze(1);
        Tensor Branch(Tensor allow) =>
            (scores.masked_fill(allow.logical_not(), MaskedScore).softmax(-1) * allow.to(query.dtype)).matmul(v);
        var own = v.narrow(2, lk - lq, lq) * queryModality.eq(TokenModalityScalars.Image).to(query.dtype).view(b, 1, lq, 1);
        return Branch(allowText).add(Branch(allowImage), TorchScalars.One).add(own, TorchScalars.One).MoveToOuterDisposeScope();
    }

    static readonly Scalar MaskedScore = (-1e9).ToScalar();
}
