using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// Multi-modal causal attention (DeepSpeed-VisualChat, arXiv 2309.14327 §4): a text query attends to earlier text keys
/// (itself included) through one softmax and to earlier image keys through a second softmax, and the two outputs are
/// summed; an image query attends only to itself, so its output is its own value row. A branch without any allowed
/// key contributes exactly zero, and padding keys are never attended.
/// </summary>
/// <remarks>
/// Two masked dense attentions over the whole sequence would cost ~3.5× plain causal attention. The structure allows
/// better: text→text is ordinary causal attention over the text positions gathered into a compact sequence (order is
/// preserved, so causality carries over), text→image is a small step-shaped boolean mask between text queries and
/// image keys, and image queries need no attention at all. <see cref="MmcaPlan"/> holds those index structures; it is
/// built once per forward pass from the modality map and shared by every layer.
/// </remarks>
public static class MultiModalCausalAttention
{
    /// <param name="query">[B, H, Lq, D], after rotary embedding.</param>
    /// <param name="key">[B, Hkv, Lk, D]; the last Lq key positions are the queries' own positions.</param>
    /// <param name="value">[B, Hkv, Lk, D].</param>
    /// <returns>[B, H, Lq, D]; zero rows for padding queries.</returns>
    public static Tensor Attend(Tensor query, Tensor key, Tensor value, MmcaPlan plan)
    {
        long batch = query.shape[0], heads = query.shape[1], kvHeads = key.shape[1], headDim = query.shape[3];
        if (heads % kvHeads != 0)
            throw new ArgumentException($"query heads ({heads}) must be a multiple of key/value heads ({kvHeads}).");
        if (plan.QueryLength != query.shape[2] || plan.KeyLength != key.shape[2] || plan.Batch != batch)
        {
            throw new ArgumentException(
                $"The attention plan was built for {plan.Batch}×{plan.QueryLength} queries over {plan.KeyLength} keys, but got {batch}×{query.shape[2]} over {key.shape[2]}.");
        }

        if (plan.DType != query.dtype)
            throw new ArgumentException($"The attention plan was built for {plan.DType} but the queries are {query.dtype}; build it with the model's compute dtype (AttentionContext.ComputeType).");
        long groups = heads / kvHeads, lq = plan.QueryLength;

        using var scope = NewDisposeScope();
        var output = ImageSelfOutput(value, plan, groups);
        if (plan.TextQueryCount == 0) return output.MoveToOuterDisposeScope();

        // [B·L, H·D] row views: gathering compact sequences is one contiguous row copy per token.
        var keyRows = Rows(key);
        var valueRows = Rows(value);
        var textQueries = Gather(Rows(query), plan.TextQueryRows, batch, plan.TextQueryCount, heads, headDim);
        var textKeys = RepeatHeads(Gather(keyRows, plan.TextKeyRows, batch, plan.TextKeyCount, kvHeads, headDim), groups);
        var textValues = RepeatHeads(Gather(valueRows, plan.TextKeyRows, batch, plan.TextKeyCount, kvHeads, headDim), groups);
        var textOut = plan.TextToTextMask is null
            ? nn.functional.scaled_dot_product_attention(textQueries, textKeys, textValues, is_casual: true)
            : nn.functional.scaled_dot_product_attention(textQueries, textKeys, textValues, plan.TextToTextMask);

        if (plan.ImageKeyCount > 0)
        {
            var imageKeys = RepeatHeads(Gather(keyRows, plan.ImageKeyRows!, batch, plan.ImageKeyCount, kvHeads, headDim), groups);
            var imageValues = RepeatHeads(Gather(valueRows, plan.ImageKeyRows!, batch, plan.ImageKeyCount, kvHeads, headDim), groups);
            var imageOut = nn.functional.scaled_dot_product_attention(textQueries, imageKeys, imageValues, plan.TextToImageMask!);
            textOut = textOut.add(imageOut * plan.TextSeesImage!, TorchScalars.One);
        }

        // Compact entries that are not real text queries carry finite junk; zero them so adding them anywhere is harmless.
        var contribution = (textOut * plan.TextQueryValid).transpose(1, 2).reshape(batch * plan.TextQueryCount, heads * headDim);
        var textRows = zeros(batch * lq, heads * headDim, dtype: query.dtype, device: query.device).index_add(0, plan.TextQueryRows, contribution, TorchScalars.One);
        output = output.add(textRows.view(batch, lq, heads, headDim).transpose(1, 2), TorchScalars.One);
        return output.MoveToOuterDisposeScope();
    }

    static Tensor ImageSelfOutput(Tensor value, MmcaPlan plan, long groups)
    {
        long lk = value.shape[2], lq = plan.QueryLength;
        return RepeatHeads(value.narrow(2, lk - lq, lq), groups) * plan.QueryIsImage;
    }

    static Tensor Rows(Tensor x) => x.transpose(1, 2).reshape(x.shape[0] * x.shape[2], x.shape[1] * x.shape[3]);

    static Tensor Gather(Tensor rows, Tensor index, long batch, long width, long heads, long headDim) =>
        rows.index_select(0, index).view(batch, width, heads, headDim).transpose(1, 2);

    static Tensor RepeatHeads(Tensor t, long groups) => groups == 1 ? t : t.repeat_interleave(groups, dim: 1);
}
