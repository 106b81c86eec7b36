using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>Multi-head attention with grouped KV heads; the attention computation itself is the context's kernel.</summary>
internal sealed class LlamaAttention : nn.Module<Tensor, DecoderLayerContext, Tensor>
{
    readonly int layerIndex;
    readonly int numHeads;
    readonly int numKeyValueHeads;
    readonly int headDim;
    public readonly nn.Module<Tensor, Tensor> q_proj;
    public readonly nn.Module<Tensor, Tensor> k_proj;
    public readonly nn.Module<Tensor, Tensor> v_proj;
    public readonly nn.Module<Tensor, Tensor> o_proj;

    public LlamaAttention(LlamaConfig config, int layerIndex, bool initialize = true) : base(nameof(LlamaAttention))
    {
        this.layerIndex = layerIndex;
        numHeads = config.NumAttentionHeads;
        numKeyValueHeads = config.KeyValueHeads;
        headDim = config.HeadDim;
        q_proj = LlamaLinear.Create(config, config.HiddenSize, numHeads * headDim, config.AttentionBias, initialize);
        k_proj = LlamaLinear.Create(config, config.HiddenSize, numKeyValueHeads * headDim, config.AttentionBias, initialize);
        v_proj = LlamaLinear.Create(config, config.HiddenSize, numKeyValueHeads * headDim, config.AttentionBias, initialize);
        o_proj = LlamaLinear.Create(config, numHeads * headDim, config.HiddenSize, config.AttentionBias, initialize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states, DecoderLayerContext context)
    {
        using var scope = NewDisposeScope();
        long batch = hidden_states.shape[0], length = hidden_states.shape[1];
        var q = q_proj.forward(hidden_states).view(batch, length, numHeads, headDim).transpose(1, 2);
        var k = k_proj.forward(hidden_states).view(batch, length, numKeyValueHeads, headDim).transpose(1, 2);
        var v = v_proj.forward(hidden_states).view(batch, length, numKeyValueHeads, headDim).transpose(1, 2);
        (q, k) = LlamaRotaryEmbedding.ApplyRotaryPosEmb(q, k, context.Cos, context.Sin);
        if (context.Cache is { } cache) (k, v) = cache.Update(layerIndex, k, v);
        k = RepeatKeyValue(k, numHeads / numKeyValueHeads);
        v = RepeatKeyValue(v, numHeads / numKeyValueHeads);
        var attended = context.Kernel.Attend(q, k, v, layerIndex, context.Attention);
        var merged = attended.transpose(1, 2).reshape(batch, length, numHeads * headDim);
        return o_proj.forward(merged).MoveToOuterDisposeScope();
    }

    /// <summary>HF repeat_kv: [B, kvH, T, D] → [B, kvH·groups, T, D], each KV head serving <paramref name="groups"/> consecutive query heads.</summary>
    public static Tensor RepeatKeyValue(Tensor x, int groups)
    {
        if (groups == 1) return x;
        long b = x.shape[0], h = x.shape[1], t = x.shape[2], d = x.shape[3];
        return x.unsqueeze(2).expand(b, h, groups, t, d).reshape(b, h * groups, t, d);
    }
}
