using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>Standard decoder attention: each token sees itself and earlier, non-padded tokens.</summary>
public sealed class CausalAttentionKernel : IAttentionKernel
{
    public static readonly CausalAttentionKernel Instance = new();

    public void Prepare(AttentionContext context)
    {
        context.Mask = null;
        context.UseCausalFastPath = false;
        if (context.KeyPaddingMask is null) {
            if (context.PastLength == 0 && context.QueryLength > 1) { context.UseCausalFastPath = true; return; }
            if (context.QueryLength == 1) return;   // one new token may see every cached one
        }
        context.Mask = AttentionMasks.Causal(context.QueryLength, context.PastLength, context.KeyPaddingMask, context.QueryPositions.device);
    }

    public Tensor Attend(Tensor q, Tensor k, Tensor v, int layerIndex, AttentionContext context) =>
        nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: context.Mask, is_casual: context.UseCausalFastPath);
}
