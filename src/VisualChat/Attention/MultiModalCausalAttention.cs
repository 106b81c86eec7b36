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
        long heads = query.shape[1], kvHeads = key.shape[1], headDim = query.shape[3];
        if (heads % kvHeads != 0)
            throw new ArgumentException($"query heads ({heads}) must be a multiple of key/value heads ({kvHeads}).");
        if (plan.QueryLength != query.shape[2] || plan.KeyLength != key.shape[2])
            throw new ArgumentException(
                $"The attention plan was built for {plan.QueryLength} queries over {plan.KeyLength} keys, but got {query.shape[2]} over {key.shape[2]}.");
        long groups = heads / kvHeads;

        using var scope = NewDisposeScope();
        var output = ImageSelfOutput(value, plan, groups);

        if (plan.TextQueryCount > 0)
        {
            var textQueries = Gather(query, plan.TextQueryIndex, heads, headDim);
            var textKeys = RepeatHeads(Gather(key, plan.TextKeyIndex, kvHeads, headDim), groups);
            var textValues = RepeatHeads(Gather(value, plan.TextKeyIndex, kvHeads, headDim), groups);
            var textOut = plan.TextToTextMask is null
                ? nn.functional.scaled_dot_product_attention(textQueries, textKeys, textValues, is_casual: true)
                : nn.functional.scaled_dot_product_attention(textQueries, textKeys, textValues, plan.TextToTextMask);

            if (plan.ImageKeyCount > 0)
            {
                var imageKeys = RepeatHeads(Gather(key, plan.ImageKeyIndex!, kvHeads, headDim), groups);
                var imageValues = RepeatHeads(Gather(value, plan.ImageKeyIndex!, kvHeads, headDim), groups);
                var imageOut = nn.functional.scaled_dot_product_attention(textQueries, imageKeys, imageValues, plan.TextToImageMask!);
                textOut = textOut + imageOut * plan.TextSeesImage!;
            }

            // Compact rows that are not real text queries carry finite junk; zero them before they land anywhere.
            textOut = textOut * plan.TextQueryValid;
            var scatterIndex = plan.TextQueryIndex.unsqueeze(1).unsqueeze(3).expand(-1, heads, -1, headDim);
            output = output.scatter_add(2, scatterIndex, textOut);
        }
        return output.MoveToOuterDisposeScope();
    }

    static Tensor ImageSelfOutput(Tensor value, MmcaPlan plan, long groups)
    {
        long lk = value.shape[2], lq = plan.QueryLength;
        var ownValues = RepeatHeads(value.narrow(2, lk - lq, lq), groups);
        return ownValues * plan.QueryIsImage;
    }

    static Tensor Gather(Tensor source, Tensor index, long heads, long headDim) =>
        source.gather(2, index.unsqueeze(1).unsqueeze(3).expand(-1, heads, -1, headDim));

    static Tensor RepeatHeads(Tensor t, long groups) => groups == 1 ? t : t.repeat_interleave(groups, dim: 1);
}
