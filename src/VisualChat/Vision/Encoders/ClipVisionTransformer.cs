using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>HF <c>CLIPVisionTransformer</c>: embeddings → pre_layrnorm (sic) → encoder; post_layernorm only for the pooled CLS.</summary>
public sealed class ClipVisionTransformer : nn.Module<Tensor, Tensor>
{
    private readonly ClipVisionEmbeddings embeddings;
    private readonly LayerNorm pre_layrnorm;
    private readonly ClipEncoder encoder;
    private readonly LayerNorm post_layernorm;

    public ClipVisionTransformer(ClipVisionConfig config, string name = "vision_model") : base(name)
    {
        embeddings = new ClipVisionEmbeddings(config);
        pre_layrnorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        encoder = new ClipEncoder(config);
        post_layernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps);
        RegisterComponents();
    }

    public int LayerCount => encoder.LayerCount;

    /// <summary>HF last_hidden_state: [N, patches + 1, D], not post-normalized.</summary>
    public override Tensor forward(Tensor pixelValues) => HiddenState(pixelValues, encoder.LayerCount);

    /// <summary>HF hidden_states[layerCount]: 0 is the pre_layrnorm'd embeddings, LayerCount the last layer.</summary>
    public Tensor HiddenState(Tensor pixelValues, int layerCount)
    {
        using var scope = NewDisposeScope();
        var x = pre_layrnorm.forward(embeddings.forward(pixelValues));
        return encoder.Forward(x, layerCount).MoveToOuterDisposeScope();
    }

    /// <summary>HF pooler_output from a last_hidden_state: post_layernorm of the CLS token, [N, D].</summary>
    public Tensor Pool(Tensor lastHiddenState)
    {
        using var scope = NewDisposeScope();
        return post_layernorm.forward(lastHiddenState.select(1, 0)).MoveToOuterDisposeScope();
    }
}
