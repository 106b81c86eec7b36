using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>HF <c>CLIPEncoder</c>: the stack <c>layers.{i}</c>.</summary>
public sealed class ClipEncoder : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<ClipEncoderLayer> layers;

    public ClipEncoder(ClipVisionConfig config, string name = "encoder") : base(name)
    {
        layers = new ModuleList<ClipEncoderLayer>();
        for (var i = 0; i < config.NumHiddenLayers; i++)
            layers.Add(new ClipEncoderLayer(config));
        RegisterComponents();
    }

    public int LayerCount => layers.Count;

    public override Tensor forward(Tensor hiddenStates) => Forward(hiddenStates, layers.Count);

    /// <summary>
    /// Runs the first <paramref name="layerCount"/> layers. In HF terms the result is hidden_states[layerCount]
    /// (hidden_states[0] being the embeddings), so layerCount = N - 1 gives hidden_states[-2].
    /// </summary>
    public Tensor Forward(Tensor hiddenStates, int layerCount)
    {
        if (layerCount < 0 || layerCount > layers.Count)
            throw new ArgumentOutOfRangeException(nameof(layerCount), $"layerCount must be in 0..{layers.Count}.");
        using var scope = NewDisposeScope();
        var x = hiddenStates;
        for (var i = 0; i < layerCount; i++)
            x = layers[i].forward(x);
        return (layerCount == 0 ? x.alias() : x).MoveToOuterDisposeScope();
    }
}
