using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(·)).</summary>
internal sealed class LlamaDecoderLayer : nn.Module<Tensor, DecoderLayerContext, Tensor>
{
    public readonly LlamaAttention self_attn;
    public readonly LlamaMLP mlp;
    public readonly LlamaRMSNorm input_layernorm;
    public readonly LlamaRMSNorm post_attention_layernorm;

    public LlamaDecoderLayer(LlamaConfig config, int layerIndex, bool initialize = true) : base(nameof(LlamaDecoderLayer))
    {
        self_attn = new LlamaAttention(config, layerIndex, initialize);
        mlp = new LlamaMLP(config, initialize);
        input_layernorm = new LlamaRMSNorm(config.HiddenSize, config.RmsNormEps);
        post_attention_layernorm = new LlamaRMSNorm(config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states, DecoderLayerContext context)
    {
        using var scope = NewDisposeScope();
        var h = hidden_states.add(self_attn.forward(input_layernorm.forward(hidden_states), context), TorchScalars.One);
        var output = h.add(mlp.forward(post_attention_layernorm.forward(h)), TorchScalars.One);
        return output.MoveToOuterDisposeScope();
    }
}
