using System.Text.Json;
using System.Text.Json.Serialization;
using VisualChat.Vision.Imaging;

namespace VisualChat.Vision.Encoders;

/// <summary>
/// Hyper-parameters of Qwen-VL's visual encoder as DeepSpeed-VisualChat builds it. DSVC ships a CLIP-bigG CLIPModel
/// config (shared/models/configs/qwen-clip-config.json) and takes only patch_size, hidden_size (width), num_hidden_layers,
/// num_attention_heads and intermediate_size (mlp) from its vision_config; it hard-codes image_size 448, output_dim 4096,
/// 256 queries, LayerNorm eps 1e-6 and drops Qwen-VL's final <c>proj</c>. <see cref="Parse"/> also reads a Qwen-VL
/// config.json ("visual" section, with proj) and this class's own saved form.
/// </summary>
public sealed class QwenVisionConfig
{
    [JsonPropertyName("image_size")] public int ImageSize { get; set; } = 448;
    [JsonPropertyName("patch_size")] public int PatchSize { get; set; } = 14;
    [JsonPropertyName("width")] public int Width { get; set; } = 1664;
    [JsonPropertyName("layers")] public int Layers { get; set; } = 48;
    [JsonPropertyName("heads")] public int Heads { get; set; } = 16;
    [JsonPropertyName("mlp_size")] public int MlpSize { get; set; } = 8192;
    [JsonPropertyName("output_dim")] public int OutputDim { get; set; } = 4096;
    /// <summary>Resampler queries; a square number (grid 16 → 256).</summary>
    [JsonPropertyName("n_queries")] public int NQueries { get; set; } = 256;
    /// <summary>Rows of the learned <c>positional_embedding</c> (a square grid; 256 in Qwen-VL, resized to the patch grid by bicubic interpolation).</summary>
    [JsonPropertyName("positional_embedding_size")] public int PositionalEmbeddingSize { get; set; } = 256;
    /// <summary>Resampler heads; 0 means Qwen-VL's output_dim / 128.</summary>
    [JsonPropertyName("resampler_heads")] public int ResamplerHeads { get; set; }
    [JsonPropertyName("layer_norm_eps")] public double LayerNormEps { get; set; } = 1e-6;
    /// <summary>Qwen-VL's final <c>proj</c> [output_dim, output_dim] (x @ proj). DSVC's extracted encoder has none.</summary>
    [JsonPropertyName("use_output_projection")] public bool UseOutputProjection { get; set; }

    [JsonIgnore] public int PatchGrid => ImageSize / PatchSize;
    [JsonIgnore] public int NumPatches => PatchGrid * PatchGrid;
    [JsonIgnore] public int QueryGrid => IntSqrt(NQueries);
    [JsonIgnore] public int EffectiveResamplerHeads => ResamplerHeads > 0 ? ResamplerHeads : OutputDim / 128;

    private static readonly JsonSerializerOptions SaveOptions = new() { WriteIndented = true };

    /// <summary>The encoder DeepSpeed-VisualChat loads from qwen_clip/pytorch_model.bin: 448 px → 256 tokens of width 4096.</summary>
    public static QwenVisionConfig DeepSpeedVisualChat() => new();

    /// <summary>
    /// Unit-test size: 56 px, patch 14 (4×4 = 16 patches), width 32, 2 layers of 4 heads, output 48 with 2 resampler heads,
    /// 4 queries; the 2×2 positional table and the 2×2 query sin-cos table both get resized to the 4×4 patch grid.
    /// </summary>
    public static QwenVisionConfig Tiny() => new()
    {
        ImageSize = 56, PatchSize = 14, Width = 32, Layers = 2, Heads = 4, MlpSize = 64, OutputDim = 48,
        NQueries = 4, PositionalEmbeddingSize = 4, ResamplerHeads = 2, LayerNormEps = 1e-6,
    };

    public static QwenVisionConfig Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException(
                $"Qwen vision config '{path}' does not exist; pass DSVC's qwen_clip config.json, a Qwen-VL config.json or a saved QwenVisionConfig.", path);
        }

        try
        {
            return Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Qwen vision config '{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>
    /// Accepts (1) DSVC's CLIP config (has "vision_config" or model_type clip_vision_model): DSVC's hard-coded values
    /// fill the rest; (2) a Qwen-VL config.json (has "visual"): mlp_size = int(width · mlp_ratio), proj kept;
    /// (3) the JSON written by <see cref="Save"/> (has "width").
    /// </summary>
    public static QwenVisionConfig Parse(string json)
    {
        using var document = JsonDocument.Parse(json);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException("Qwen vision config must be a JSON object.");

        if (root.TryGetProperty("visual", out var visual) && visual.ValueKind == JsonValueKind.Object)
        {
            var config = new QwenVisionConfig { UseOutputProjection = true };
            config.ImageSize = GetInt(visual, "image_size", config.ImageSize);
            config.PatchSize = GetInt(visual, "patch_size", config.PatchSize);
            config.Width = GetInt(visual, "width", config.Width);
            config.Layers = GetInt(visual, "layers", config.Layers);
            config.Heads = GetInt(visual, "heads", config.Heads);
            config.OutputDim = GetInt(visual, "output_dim", config.OutputDim);
            config.NQueries = GetInt(visual, "n_queries", config.NQueries);
            if (visual.TryGetProperty("mlp_ratio", out var ratio) && ratio.ValueKind == JsonValueKind.Number)
                config.MlpSize = (int)(config.Width * ratio.GetDouble());
            return config.Validated();
        }

        var isClip = root.TryGetProperty("vision_config", out _)
                     || (root.TryGetProperty("model_type", out var type) && type.GetString() is "clip" or "clip_vision_model");
        if (isClip)
        {
            var clip = ClipVisionConfig.Parse(json);
            return new QwenVisionConfig
            {
                PatchSize = clip.PatchSize, Width = clip.HiddenSize, Layers = clip.NumHiddenLayers,
                Heads = clip.NumAttentionHeads, MlpSize = clip.IntermediateSize,
            }.Validated();
        }

        if (root.TryGetProperty("width", out _))
            return root.Deserialize<QwenVisionConfig>()!.Validated();

        throw new InvalidDataException(
            "Qwen vision config has neither \"vision_config\" (DSVC CLIP config), \"visual\" (Qwen-VL config) nor \"width\" (saved QwenVisionConfig).");
    }

    public void Save(string path)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null) Directory.CreateDirectory(directory);
        File.WriteAllText(path, JsonSerializer.Serialize(this, SaveOptions));
    }

    public QwenVisionConfig Clone() => (QwenVisionConfig)MemberwiseClone();

    public QwenVisionConfig Validated()
    {
        if (Width <= 0 || Heads <= 0 || Width % Heads != 0)
            throw new InvalidDataException($"Qwen vision config: width {Width} must be a positive multiple of heads {Heads}.");
        if (PatchSize <= 0 || ImageSize < PatchSize || ImageSize % PatchSize != 0)
            throw new InvalidDataException($"Qwen vision config: image_size {ImageSize} must be a positive multiple of patch_size {PatchSize}.");
        if (Layers <= 0 || MlpSize <= 0)
            throw new InvalidDataException("Qwen vision config: layers and mlp_size must be positive.");
        if (IntSqrt(NQueries) is var q && q * q != NQueries)
            throw new InvalidDataException($"Qwen vision config: n_queries {NQueries} must be a square number (a query grid).");
        if (IntSqrt(PositionalEmbeddingSize) is var p && p * p != PositionalEmbeddingSize)
            throw new InvalidDataException($"Qwen vision config: positional_embedding_size {PositionalEmbeddingSize} must be a square number.");
        if (OutputDim % 4 != 0)
            throw new InvalidDataException($"Qwen vision config: output_dim {OutputDim} must be divisible by 4 for the 2-D sin-cos table.");
        if (EffectiveResamplerHeads <= 0 || OutputDim % EffectiveResamplerHeads != 0)
        {
            throw new InvalidDataException(
                $"Qwen vision config: output_dim {OutputDim} must be a positive multiple of the resampler heads {EffectiveResamplerHeads} (set resampler_heads).");
        }

        return this;
    }

    private static int GetInt(JsonElement element, string name, int fallback) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number ? value.GetInt32() : fallback;

    private static int IntSqrt(int n) => n <= 0 ? 0 : (int)Math.Round(Math.Sqrt(n));
}
