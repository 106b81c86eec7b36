using System.Text.Json;
using System.Text.Json.Serialization;
using VisualChat.Conversations;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Projection;

namespace VisualChat.Model;

/// <summary>How text tokens see image tokens inside the language model.</summary>
public enum AttentionMode
{
    /// <summary>Plain causal attention over the mixed text + image sequence.</summary>
    Causal,
    /// <summary>Causal self-attention plus a gated (Flamingo-style) cross-attention from text to earlier image tokens.</summary>
    CausalCross,
    /// <summary>DeepSpeed-VisualChat's multi-modal causal attention.</summary>
    Mmca,
}

/// <summary>
/// <c>visualchat.json</c> of a model folder: how the vision encoder, projection and language model are put together.
/// The encoder's own config lives in <c>vision/config.json</c> and the LM's in <c>lm/config.json</c>; they are attached
/// here as <see cref="ClipVision"/> / <see cref="QwenVision"/> when the folder is loaded.
/// </summary>
public sealed class VisualChatConfig
{
    public const string FileName = "visualchat.json";

    /// <summary>"causal", "causal+cross" or "mmca".</summary>
    [JsonPropertyName("attention_mode")] public string AttentionModeName { get; set; } = "mmca";
    /// <summary>"baseline", "vit" or "perceiver" (DSVC --vis_proj), or "mlp2x_gelu" (LLaVA-1.5).</summary>
    [JsonPropertyName("projection")] public string Projection { get; set; } = "baseline";
    [JsonPropertyName("perceiver_grid_size")] public int PerceiverGridSize { get; set; } = 16;
    [JsonPropertyName("perceiver_heads")] public int? PerceiverHeads { get; set; }
    /// <summary>"clip" (HF CLIPVisionModel) or "qwen" (Qwen-VL visual transformer).</summary>
    [JsonPropertyName("vision_encoder")] public string VisionEncoder { get; set; } = "clip";
    /// <summary>CLIP only: "last_hidden_state" (DSVC), "penultimate_layer" or "pooled_output".</summary>
    [JsonPropertyName("vision_feature_select")] public string VisionFeatureSelectName { get; set; } = "last_hidden_state";
    [JsonPropertyName("drop_cls_token")] public bool DropClsToken { get; set; }
    [JsonPropertyName("image_token")] public string ImageToken { get; set; } = ConversationTemplate.ImagePlaceholder;
    /// <summary>Vocabulary size of the language model before the image token was added: the LM head's rows.</summary>
    [JsonPropertyName("lm_vocab_size")] public int LmVocabSize { get; set; }
    /// <summary>Id of the image token: an added id ≥ <see cref="LmVocabSize"/> (a row of the grown input embedding), or
    /// for LLaVA checkpoints its <c>image_token_index</c> inside the padded vocabulary.</summary>
    [JsonPropertyName("image_token_id")] public int ImageTokenId { get; set; }
    [JsonPropertyName("system_prompt")] public string? SystemPrompt { get; set; } = ConversationTemplate.DefaultSystemPrompt;
    [JsonPropertyName("bos_each_round")] public bool BosEachRound { get; set; } = true;
    /// <summary>"dsvc" (DeepSpeed-VisualChat's "### Image k:" template) or "llava" (LLaVA-1.5's USER:/ASSISTANT:).</summary>
    [JsonPropertyName("prompt_template")] public string PromptTemplate { get; set; } = DsvcTemplateName;
    /// <summary>Train an untied LM head too (tied models always train it through the shared embedding matrix).</summary>
    [JsonPropertyName("train_lm_head")] public bool TrainLmHead { get; set; }
    /// <summary>Most images one conversation may hold; null = no limit.</summary>
    [JsonPropertyName("max_images")] public int? MaxImages { get; set; }

    [JsonIgnore] public ClipVisionConfig? ClipVision { get; set; }
    [JsonIgnore] public QwenVisionConfig? QwenVision { get; set; }

    [JsonIgnore] public AttentionMode AttentionMode => ParseAttentionMode(AttentionModeName, FileName);
    [JsonIgnore] public ProjectionKind ProjectionKind => ProjectionFactory.ParseKind(Projection);
    [JsonIgnore] public VisionFeatureSelect VisionFeatureSelect => ParseFeatureSelect(VisionFeatureSelectName, FileName);
    [JsonIgnore] public ConversationTemplateOptions TemplateOptions => new() { SystemPrompt = SystemPrompt, BosEachRound = BosEachRound, Style = ParsePromptStyle(PromptTemplate, FileName) };

    public const string DsvcTemplateName = "dsvc", LlavaTemplateName = "llava";

    public static PromptStyle ParsePromptStyle(string name, string source) => name.Trim().ToLowerInvariant() switch
    {
        DsvcTemplateName => PromptStyle.DeepSpeedVisualChat,
        LlavaTemplateName => PromptStyle.Llava,
        _ => throw new InvalidDataException($"{source}: prompt_template '{name}' is unknown; use \"{DsvcTemplateName}\" or \"{LlavaTemplateName}\"."),
    };

    static readonly JsonSerializerOptions WriteOptions = new() { WriteIndented = true };

    /// <summary>Makes <paramref name="encoder"/> this config's vision encoder: its kind and its architecture config.</summary>
    public void UseVisionEncoder(IVisionEncoder encoder)
    {
        VisionEncoder = encoder.Kind;
        ClipVision = encoder.Config as ClipVisionConfig;
        QwenVision = encoder.Config as QwenVisionConfig;
    }

    public static AttentionMode ParseAttentionMode(string name, string source) => name.Trim().ToLowerInvariant() switch
    {
        "causal" => AttentionMode.Causal,
        "causal+cross" => AttentionMode.CausalCross,
        "mmca" => AttentionMode.Mmca,
        _ => throw new InvalidDataException($"{source}: attention_mode '{name}' is unknown; use \"causal\", \"causal+cross\" or \"mmca\"."),
    };

    public static string AttentionModeToName(AttentionMode mode) => mode switch
    {
        AttentionMode.Causal => "causal",
        AttentionMode.CausalCross => "causal+cross",
        _ => "mmca",
    };

    static VisionFeatureSelect ParseFeatureSelect(string name, string source) => name.Trim().ToLowerInvariant() switch
    {
        "last_hidden_state" => VisionFeatureSelect.LastHiddenState,
        "penultimate_layer" => VisionFeatureSelect.PenultimateLayer,
        "pooled_output" => VisionFeatureSelect.PooledOutput,
        _ => throw new InvalidDataException($"{source}: vision_feature_select '{name}' is unknown; use \"last_hidden_state\", \"penultimate_layer\" or \"pooled_output\"."),
    };

    /// <summary>Checks every key; the message names the key and the file.</summary>
    public VisualChatConfig Validated(string source = FileName)
    {
        _ = ParseAttentionMode(AttentionModeName, source);
        try { _ = ProjectionFactory.ParseKind(Projection); }
        catch (ArgumentException) { throw new InvalidDataException($"{source}: projection '{Projection}' is unknown; use \"baseline\", \"vit\", \"perceiver\" or \"mlp2x_gelu\"."); }
        _ = ParseFeatureSelect(VisionFeatureSelectName, source);
        _ = ParsePromptStyle(PromptTemplate, source);
        if (!VisionEncoderFactory.Kinds.Contains(VisionEncoder))
            throw new InvalidDataException($"{source}: vision_encoder '{VisionEncoder}' is unknown; use {string.Join(" or ", VisionEncoderFactory.Kinds.Select(k => $"\"{k}\""))}.");
        if (PerceiverGridSize < 1) throw new InvalidDataException($"{source}: perceiver_grid_size must be ≥ 1 (got {PerceiverGridSize}).");
        if (PerceiverHeads is < 1) throw new InvalidDataException($"{source}: perceiver_heads must be ≥ 1 when given (got {PerceiverHeads}).");
        if (string.IsNullOrEmpty(ImageToken)) throw new InvalidDataException($"{source}: image_token must be a non-empty string such as \"<image>\".");
        if (LmVocabSize < 1) throw new InvalidDataException($"{source}: lm_vocab_size must be the language model's vocab_size (got {LmVocabSize}).");
        // DSVC adds the placeholder after the vocabulary; LLaVA keeps it inside a padded vocabulary (32000 of 32064).
        bool llava = ParsePromptStyle(PromptTemplate, source) == PromptStyle.Llava;
        if (ImageTokenId < 0 || (!llava && ImageTokenId < LmVocabSize))
        {
            throw new InvalidDataException(llava
                ? $"{source}: image_token_id {ImageTokenId} must be a token id ≥ 0 (LLaVA's image_token_index)."
                : $"{source}: image_token_id {ImageTokenId} must be an added id ≥ lm_vocab_size {LmVocabSize}.");
        }

        if (MaxImages is < 1) throw new InvalidDataException($"{source}: max_images must be ≥ 1 when given (got {MaxImages}).");
        return this;
    }

    public static VisualChatConfig Parse(string json, string source = FileName)
    {
        VisualChatConfig? config;
        try { config = JsonSerializer.Deserialize<VisualChatConfig>(json); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not a valid visualchat config ({e.Message}).", e); }
        return (config ?? throw new InvalidDataException($"{source}: the file holds no JSON object.")).Validated(source);
    }

    public static VisualChatConfig Load(string path) => Parse(File.ReadAllText(path), path);

    public string ToJson() => JsonSerializer.Serialize(this, WriteOptions);

    public void Save(string path) => File.WriteAllText(path, ToJson());

    public VisualChatConfig Clone()
    {
        var copy = Parse(ToJson(), "clone");
        copy.ClipVision = ClipVision?.Clone();
        copy.QwenVision = QwenVision?.Clone();
        return copy;
    }
}
