using System.Text.Json;
using System.Text.Json.Serialization;
using VisualChat.Vision.Imaging;

namespace VisualChat.Vision.Encoders;

/// <summary>
/// Vision half of a Hugging Face CLIP config (<c>CLIPVisionConfig</c>). Reads either a <c>CLIPVisionModel</c>
/// config.json (model_type clip_vision_model) or a full <c>CLIPModel</c> config.json, whose "vision_config" it takes.
/// Defaults are HF's CLIPVisionConfig defaults, so keys a file leaves out mean what they mean in transformers.
/// </summary>
public sealed class ClipVisionConfig
{
    [JsonPropertyName("model_type")] public string ModelType { get; set; } = "clip_vision_model";
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; set; } = 768;
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; set; } = 3072;
    [JsonPropertyName("projection_dim")] public int ProjectionDim { get; set; } = 512;
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; set; } = 12;
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; set; } = 12;
    [JsonPropertyName("num_channels")] public int NumChannels { get; set; } = 3;
    [JsonPropertyName("image_size")] public int ImageSize { get; set; } = 224;
    [JsonPropertyName("patch_size")] public int PatchSize { get; set; } = 32;
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; set; } = "quick_gelu";
    [JsonPropertyName("layer_norm_eps")] public double LayerNormEps { get; set; } = 1e-5;

    [JsonIgnore] public int PatchGrid => ImageSize / PatchSize;
    [JsonIgnore] public int NumPatches => PatchGrid * PatchGrid;
    /// <summary>Patches plus the CLS token: the length of <c>position_embedding</c> and of every hidden state.</summary>
    [JsonIgnore] public int NumPositions => NumPatches + 1;
    [JsonIgnore] public int HeadDim => HiddenSize / NumAttentionHeads;

    private static readonly JsonSerializerOptions SaveOptions = new() { WriteIndented = true };

    /// <summary>Small enough for unit tests: 32 px, patch 8 (16 patches + CLS), width 32, 2 layers, 4 heads.</summary>
    public static ClipVisionConfig Tiny() => new()
    {
        HiddenSize = 32, IntermediateSize = 64, ProjectionDim = 16, NumHiddenLayers = 2, NumAttentionHeads = 4,
        ImageSize = 32, PatchSize = 8, HiddenAct = "quick_gelu", LayerNormEps = 1e-5,
    };

    /// <summary>openai/clip-vit-large-patch14: 224 px, 257 tokens of width 1024.</summary>
    public static ClipVisionConfig ClipVitLargePatch14() => new()
    {
        HiddenSize = 1024, IntermediateSize = 4096, ProjectionDim = 768, NumHiddenLayers = 24, NumAttentionHeads = 16,
        ImageSize = 224, PatchSize = 14, HiddenAct = "quick_gelu", LayerNormEps = 1e-5,
    };

    /// <summary>openai/clip-vit-large-patch14-336: 336 px, 577 tokens of width 1024.</summary>
    public static ClipVisionConfig ClipVitLargePatch14_336()
    {
        var config = ClipVitLargePatch14();
        config.ImageSize = 336;
        return config;
    }

    /// <summary>Preset by name: "tiny", "clip-vit-large-patch14", "clip-vit-large-patch14-336" (an "openai/" prefix is accepted).</summary>
    public static ClipVisionConfig Preset(string name)
    {
        var key = name.StartsWith("openai/", StringComparison.OrdinalIgnoreCase) ? name["openai/".Length..] : name;
        return key.ToLowerInvariant() switch
        {
            "tiny" => Tiny(),
            "clip-vit-large-patch14" => ClipVitLargePatch14(),
            "clip-vit-large-patch14-336" => ClipVitLargePatch14_336(),
            _ => throw new ArgumentException(
                $"Unknown CLIP vision preset '{name}'. Use tiny, clip-vit-large-patch14 or clip-vit-large-patch14-336.", nameof(name)),
        };
    }

    public static ClipVisionConfig Load(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"CLIP config '{path}' does not exist; pass the config.json of a CLIPVisionModel or CLIPModel.", path);
        try
        {
            return Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"CLIP config '{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Parses config.json text of a CLIPVisionModel, or of a CLIPModel (then its "vision_config" is used).</summary>
    public static ClipVisionConfig Parse(string json)
    {
        using var document = JsonDocument.Parse(json);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException("CLIP config must be a JSON object.");

        if (root.TryGetProperty("vision_config", out var vision) && vision.ValueKind == JsonValueKind.Object)
        {
            var config = vision.Deserialize<ClipVisionConfig>()!;
            // CLIPModel keeps projection_dim at the top level; the nested vision_config usually lacks it.
            if (!vision.TryGetProperty("projection_dim", out _) && root.TryGetProperty("projection_dim", out var projection)
                && projection.ValueKind == JsonValueKind.Number)
            {
                config.ProjectionDim = projection.GetInt32();
            }

            config.ModelType = "clip_vision_model";
            return config.Validated();
        }

        var modelType = root.TryGetProperty("model_type", out var type) ? type.GetString() : null;
        if (modelType is not null && modelType != "clip_vision_model")
        {
            throw new InvalidDataException(
                $"CLIP config has model_type '{modelType}' and no \"vision_config\"; expected a clip_vision_model config or a CLIPModel config.");
        }

        return root.Deserialize<ClipVisionConfig>()!.Validated();
    }

    public void Save(string path)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null) Directory.CreateDirectory(directory);
        File.WriteAllText(path, JsonSerializer.Serialize(this, SaveOptions));
    }

    public ClipVisionConfig Clone() => (ClipVisionConfig)MemberwiseClone();

    /// <summary>Throws if the numbers cannot describe a ViT; returns this for chaining.</summary>
    public ClipVisionConfig Validated()
    {
        if (HiddenSize <= 0 || NumAttentionHeads <= 0 || HiddenSize % NumAttentionHeads != 0)
        {
            throw new InvalidDataException(
                $"CLIP config: hidden_size {HiddenSize} must be a positive multiple of num_attention_heads {NumAttentionHeads}.");
        }

        if (PatchSize <= 0 || ImageSize < PatchSize || ImageSize % PatchSize != 0)
            throw new InvalidDataException($"CLIP config: image_size {ImageSize} must be a positive multiple of patch_size {PatchSize}.");
        if (NumHiddenLayers <= 0 || IntermediateSize <= 0 || NumChannels <= 0)
            throw new InvalidDataException("CLIP config: num_hidden_layers, intermediate_size and num_channels must be positive.");
        VisionActivations.Validate(HiddenAct, "CLIP config hidden_act");
        return this;
    }
}
