using TorchSharp;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>
/// HF <c>CLIPVisionModel</c>; state_dict keys are exactly HF's (<c>vision_model.embeddings.class_embedding</c>,
/// <c>vision_model.pre_layrnorm.weight</c>, <c>vision_model.encoder.layers.{i}.self_attn.q_proj.weight</c>, ...).
/// forward/Encode return the features chosen by <see cref="FeatureSelect"/>. Created frozen (see <see cref="IVisionEncoder"/>).
/// </summary>
public sealed class ClipVisionModel : nn.Module<Tensor, Tensor>, IVisionEncoder
{
    private readonly ClipVisionTransformer vision_model;

    public ClipVisionModel(ClipVisionConfig config, VisionFeatureSelect featureSelect = VisionFeatureSelect.LastHiddenState,
        bool dropClsToken = false, string name = "ClipVisionModel") : base(name)
    {
        Config = config.Validated();
        if (dropClsToken && featureSelect == VisionFeatureSelect.PooledOutput)
            throw new ArgumentException("PooledOutput is the CLS token itself; it cannot drop the CLS token.", nameof(dropClsToken));
        FeatureSelect = featureSelect;
        DropClsToken = dropClsToken;
        vision_model = new ClipVisionTransformer(config);
        RegisterComponents();
        Freeze();
    }

    public ClipVisionConfig Config { get; }
    public VisionFeatureSelect FeatureSelect { get; }
    public bool DropClsToken { get; }

    public int OutputTokens => DescribeOutput(Config, FeatureSelect, DropClsToken).OutputTokens;
    public int OutputWidth => Config.HiddenSize;
    public int ImageSize => Config.ImageSize;
    public string EncoderId =>
        $"clip-vision:{Config.ImageSize}/{Config.PatchSize}/{Config.HiddenSize}x{Config.NumHiddenLayers}:{FeatureSelect}:{(DropClsToken ? "nocls" : "cls")}";

    public const string KindName = "clip";
    public string Kind => KindName;
    object IVisionEncoder.Config => Config;
    public void SaveConfig(string path) => Config.Save(path);
    /// <summary>CLIP's: shortest edge then centre crop to the encoder's size.</summary>
    public ImageProcessorConfig DefaultImageProcessor => new() { Size = VisualChat.Vision.Imaging.ImageSize.Shortest(Config.ImageSize), CropSize = VisualChat.Vision.Imaging.ImageSize.Square(Config.ImageSize) };

    public bool IsFrozen => FrozenModule.IsFrozen(this);
    public void Freeze() => FrozenModule.SetTrainable(this, false);
    public void Unfreeze() => FrozenModule.SetTrainable(this, true);

    /// <summary>Token count and width this encoder would emit for <paramref name="config"/>, without building it.</summary>
    public static VisionOutputDescription DescribeOutput(ClipVisionConfig config,
        VisionFeatureSelect featureSelect = VisionFeatureSelect.LastHiddenState, bool dropClsToken = false)
    {
        config.Validated();
        var tokens = featureSelect == VisionFeatureSelect.PooledOutput ? 1 : config.NumPositions - (dropClsToken ? 1 : 0);
        return new VisionOutputDescription(config.ImageSize, config.PatchGrid, tokens, config.HiddenSize);
    }

    public override Tensor forward(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        Tensor features = FeatureSelect switch
        {
            VisionFeatureSelect.LastHiddenState => vision_model.forward(pixelValues),
            VisionFeatureSelect.PenultimateLayer => vision_model.HiddenState(pixelValues, vision_model.LayerCount - 1),
            VisionFeatureSelect.PooledOutput => vision_model.Pool(vision_model.forward(pixelValues)).unsqueeze(1),
            _ => throw new InvalidOperationException($"Unknown feature selection {FeatureSelect}."),
        };
        if (DropClsToken) features = features.narrow(1, 1, features.shape[1] - 1);
        return features.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>HF-style outputs for callers that need both: last_hidden_state [N, T, D] and pooler_output [N, D].</summary>
    public (Tensor LastHiddenState, Tensor PooledOutput) ForwardFull(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        var last = vision_model.forward(pixelValues);
        var pooled = vision_model.Pool(last);
        return (last.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope());
    }

    /// <summary>HF hidden_states[index] (0 = embeddings after pre_layrnorm, NumHiddenLayers = last layer).</summary>
    public Tensor HiddenState(Tensor pixelValues, int index) => vision_model.HiddenState(pixelValues, index);

    public Tensor Encode(Tensor pixels) => FrozenModule.Run(this, () => forward(pixels));

    /// <summary>Loads an HF CLIPVisionModel or CLIPModel folder (vision tower only); see <see cref="VisionEncoderFolder.Load"/>.</summary>
    public static ClipVisionModel FromPretrained(string folder, Device? device = null,
        VisionFeatureSelect featureSelect = VisionFeatureSelect.LastHiddenState, bool dropClsToken = false)
    {
        var loaded = VisionEncoderFolder.Load(folder, device, featureSelect, dropClsToken);
        if (loaded.Encoder is ClipVisionModel clip) return clip;
        ((IDisposable)loaded.Encoder).Dispose();
        throw new InvalidDataException($"'{folder}' holds a {loaded.Layout} checkpoint, not CLIP; load it with VisionEncoderFolder.Load.");
    }
}
