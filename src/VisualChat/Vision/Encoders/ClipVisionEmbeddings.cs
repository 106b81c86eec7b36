using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>
/// HF <c>CLIPVisionEmbeddings</c>: patchify with a bias-free Conv2d, prepend the learned class embedding, add learned
/// absolute position embeddings (one per patch plus one for CLS). <c>position_ids</c> is a non-persistent buffer, so it
/// is not in state_dict(); checkpoints written by older transformers contain it and a loader should skip that key.
/// </summary>
public sealed class ClipVisionEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Parameter class_embedding;
    private readonly Conv2d patch_embedding;
    private readonly Embedding position_embedding;
    private readonly int imageSize;

    public ClipVisionEmbeddings(ClipVisionConfig config, string name = "embeddings") : base(name)
    {
        imageSize = config.ImageSize;
        class_embedding = new Parameter(randn(config.HiddenSize));
        patch_embedding = nn.Conv2d(config.NumChannels, config.HiddenSize, config.PatchSize, stride: config.PatchSize, bias: false);
        position_embedding = nn.Embedding(config.NumPositions, config.HiddenSize);
        RegisterComponents();
        register_buffer("position_ids", ArangePositions(config.NumPositions).unsqueeze(0), persistent: false);
    }

    private static Tensor ArangePositions(int count)
    {
        using var stop = count.ToScalar();   // held: TorchSharp does not keep Scalars alive during the native call
        return arange(TorchScalars.Zero, stop, TorchScalars.One, dtype: ScalarType.Int64);
    }

    public override Tensor forward(Tensor pixelValues)
    {
        if (pixelValues.dim() != 4 || pixelValues.shape[2] != imageSize || pixelValues.shape[3] != imageSize)
        {
            throw new ArgumentException(
                $"CLIP pixel tensor has shape [{string.Join(", ", pixelValues.shape)}]; expected [N, C, {imageSize}, {imageSize}] " +
                "(resize/crop with the CLIP image processor first).", nameof(pixelValues));
        }

        using var scope = NewDisposeScope();
        var weight = patch_embedding.weight!;
        var patches = patch_embedding.forward(pixelValues.to(weight.dtype)).flatten(2).transpose(1, 2);
        var batch = patches.shape[0];
        var classTokens = class_embedding.view(1, 1, -1).expand(batch, 1, -1);
        var embeddings = cat(new[] { classTokens, patches }, 1);
        // position_ids is arange(num_positions), so the lookup is the whole table in order.
        return embeddings.add(position_embedding.weight!.unsqueeze(0), TorchScalars.One).MoveToOuterDisposeScope();
    }
}
