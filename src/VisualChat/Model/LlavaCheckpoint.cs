using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Projection;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>Where the parts of a LLaVA checkpoint live in its state dict (prefixes of HF key names).</summary>
/// <param name="Name">How messages call the layout.</param>
/// <param name="Vision">Prefix of the CLIPVisionModel keys (<c>vision_model.*</c>).</param>
/// <param name="Projector">Prefix of <c>linear_1.*</c> and <c>linear_2.*</c>.</param>
/// <param name="LanguageModel">Prefix of the LlamaModel keys (<c>embed_tokens.weight</c>, <c>layers.*</c>, <c>norm.weight</c>).</param>
/// <param name="LmHead">Prefix of <c>weight</c> of the LM head.</param>
public sealed record LlavaKeyLayout(string Name, string Vision, string Projector, string LanguageModel, string LmHead)
{
    /// <summary>LlavaForConditionalGeneration as transformers &lt; 4.52 saves it (llava-hf/llava-1.5-7b-hf).</summary>
    public static readonly LlavaKeyLayout Legacy = new("transformers < 4.52",
        "vision_tower.", "multi_modal_projector.", "language_model.model.", "language_model.lm_head.");
    /// <summary>transformers ≥ 4.52: the backbone moved under <c>model.</c> (LlavaModel) and the head to the top.</summary>
    public static readonly LlavaKeyLayout Transformers452 = new("transformers ≥ 4.52",
        "model.vision_tower.", "model.multi_modal_projector.", "model.language_model.", "lm_head.");

    /// <summary>The checkpoint key of a <see cref="VisualChatModel"/> state-dict key, or null for parts LLaVA lacks.</summary>
    public string? CheckpointName(string moduleName) =>
        moduleName.StartsWith("vision.", StringComparison.Ordinal) ? Vision + moduleName["vision.".Length..]
        : moduleName.StartsWith("projection.", StringComparison.Ordinal) ? Projector + moduleName["projection.".Length..]
        : moduleName.StartsWith("lm.model.", StringComparison.Ordinal) ? LanguageModel + moduleName["lm.model.".Length..]
        : moduleName.StartsWith("lm.lm_head.", StringComparison.Ordinal) ? LmHead + moduleName["lm.lm_head.".Length..]
        : null;

    /// <summary>The <see cref="VisualChatModel"/> key of a checkpoint key of this layout, or null when it is none of its parts.</summary>
    public string? ModuleName(string checkpointName) =>
        checkpointName.StartsWith(Vision, StringComparison.Ordinal) ? "vision." + checkpointName[Vision.Length..]
        : checkpointName.StartsWith(Projector, StringComparison.Ordinal) ? "projection." + checkpointName[Projector.Length..]
        : checkpointName.StartsWith(LanguageModel, StringComparison.Ordinal) ? "lm.model." + checkpointName[LanguageModel.Length..]
        : checkpointName.StartsWith(LmHead, StringComparison.Ordinal) ? "lm.lm_head." + checkpointName[LmHead.Length..]
        : null;
}

/// <summary>What a LLaVA <c>config.json</c> says, mapped onto VisualChat's configs.</summary>
public sealed record LlavaConfigMapping(VisualChatConfig Config, LlamaConfig Text, ClipVisionConfig Vision, int VisionFeatureLayer, string SelectStrategy);

/// <summary>
/// Hugging Face LLaVA-1.5 folders (<c>LlavaForConditionalGeneration</c>, e.g. llava-hf/llava-1.5-7b-hf) read directly as
/// <see cref="VisualChatModel"/>s: CLIP vision tower, <c>mlp2x_gelu</c> projector, LLaMA, causal attention, LLaVA's prompt
/// template. Weights stream tensor by tensor from single or sharded safetensors (or .bin) into an uninitialised model,
/// converted to fp32 one tensor at a time, so a 7B checkpoint never exists twice in memory.
/// </summary>
public static class LlavaCheckpoint
{
    public const string ModelType = "llava";
    public const string ConfigFile = "config.json";
    const string ProbeKey = "linear_1.weight";

    /// <summary>True when <paramref name="folder"/> has a config.json with <c>model_type: llava</c> (and is not a VisualChat folder).</summary>
    public static bool IsLlavaFolder(string folder)
    {
        string path = Path.Combine(folder, ConfigFile);
        if (!File.Exists(path) || File.Exists(Path.Combine(folder, VisualChatConfig.FileName))) return false;
        try { return JsonNode.Parse(File.ReadAllText(path))?["model_type"]?.GetValue<string>() == ModelType; }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { return false; }
    }

    /// <summary>Maps a LLaVA config.json: <c>text_config</c> (LLaMA), <c>vision_config</c> (CLIP), <c>image_token_index</c>,
    /// <c>vision_feature_layer</c>, <c>vision_feature_select_strategy</c>, <c>projector_hidden_act</c>. Fields the file
    /// leaves out take transformers' LlavaConfig defaults. Anything VisualChat cannot run is one message naming the key.</summary>
    public static LlavaConfigMapping ReadConfig(string configPath)
    {
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{configPath} is missing; a LLaVA folder starts with config.json (model_type \"llava\").", configPath);
        JsonObject root;
        try { root = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? throw new InvalidDataException($"{configPath}: not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{configPath}: not valid JSON ({e.Message}).", e); }
        string? modelType = GetString(root, "model_type", configPath);
        if (modelType != ModelType) throw new InvalidDataException($"{configPath}: model_type is '{modelType}', not \"{ModelType}\".");

        var textNode = root["text_config"] as JsonObject;
        string? textType = textNode is null ? "llama" : GetString(textNode, "model_type", configPath) ?? "llama";
        if (textType != "llama")
            throw new InvalidDataException($"{configPath}: text_config.model_type '{textType}' is not supported; VisualChat runs LLaMA language models (\"llama\").");
        var text = LlamaConfig.Parse(textNode?.ToJsonString() ?? "{}", $"{configPath} text_config");

        ClipVisionConfig vision;
        if (root["vision_config"] is JsonObject visionNode) {
            string? visionType = GetString(visionNode, "model_type", configPath) ?? "clip_vision_model";
            if (visionType != "clip_vision_model")
                throw new InvalidDataException($"{configPath}: vision_config.model_type '{visionType}' is not supported; VisualChat reads CLIP vision towers (\"clip_vision_model\").");
            try { vision = ClipVisionConfig.Parse(visionNode.ToJsonString()); }
            catch (InvalidDataException e) { throw new InvalidDataException($"{configPath} vision_config: {e.Message}", e); }
        } else {
            vision = ClipVisionConfig.ClipVitLargePatch14_336(); // LlavaConfig's default tower
        }

        int imageToken = GetInt(root, "image_token_index", configPath) ?? GetInt(root, "image_token_id", configPath) ?? 32000;
        if (imageToken < 0 || imageToken >= text.VocabSize)
            throw new InvalidDataException($"{configPath}: image_token_index {imageToken} is outside text_config.vocab_size {text.VocabSize}; LLaVA embeds the placeholder with a row of the LM's embedding matrix.");

        if (root["vision_feature_layer"] is JsonArray)
            throw new InvalidDataException($"{configPath}: vision_feature_layer is a list (features of several layers concatenated); VisualChat supports one layer (-1 or -2).");
        int layer = GetInt(root, "vision_feature_layer", configPath) ?? -2;
        int layers = vision.NumHiddenLayers;
        // hidden_states has layers + 1 entries (0 = embeddings): valid indices are -(layers + 1) … layers.
        if (layer < -(layers + 1) || layer > layers)
            throw new InvalidDataException($"{configPath}: vision_feature_layer {layer} is out of range for a CLIP tower with {layers} layers (hidden_states index {-(layers + 1)} … {layers}).");
        int absolute = layer < 0 ? layers + 1 + layer : layer;
        var select = absolute == layers ? VisionFeatureSelect.LastHiddenState
            : absolute == layers - 1 ? VisionFeatureSelect.PenultimateLayer
            : throw new InvalidDataException($"{configPath}: vision_feature_layer {layer} (hidden_states[{absolute}]) is not supported; VisualChat takes the last (-1) or second-to-last (-2) CLIP layer.");

        string strategy = GetString(root, "vision_feature_select_strategy", configPath) ?? "default";
        bool dropCls = strategy switch
        {
            "default" => true,
            "full" => false,
            _ => throw new InvalidDataException($"{configPath}: vision_feature_select_strategy '{strategy}' is unknown; LLaVA defines \"default\" (drop CLS) and \"full\"."),
        };
        string act = GetString(root, "projector_hidden_act", configPath) ?? "gelu";
        if (act != "gelu")
            throw new InvalidDataException($"{configPath}: projector_hidden_act '{act}' is not supported; VisualChat's mlp2x_gelu projector uses \"gelu\".");
        if (GetBool(root, "multimodal_projector_bias", configPath) == false)
            throw new InvalidDataException($"{configPath}: multimodal_projector_bias false is not supported; the mlp2x_gelu projector has biases.");

        var config = new VisualChatConfig
        {
            AttentionModeName = VisualChatConfig.AttentionModeToName(AttentionMode.Causal),
            Projection = ProjectionFactory.Mlp2xGeluName,
            VisionEncoder = ClipVisionModel.KindName,
            VisionFeatureSelectName = select == VisionFeatureSelect.LastHiddenState ? "last_hidden_state" : "penultimate_layer",
            DropClsToken = dropCls,
            LmVocabSize = text.VocabSize,
            ImageTokenId = imageToken,
            PromptTemplate = VisualChatConfig.LlavaTemplateName,
            SystemPrompt = null,
            BosEachRound = false,
            ClipVision = vision,
        };
        config.Validated(configPath);
        return new LlavaConfigMapping(config, text, vision, layer, strategy);
    }

    /// <summary>Which key layout <paramref name="source"/> uses; throws naming the probe keys when neither.</summary>
    public static LlavaKeyLayout DetectLayout(ITensorSource source, string where)
    {
        foreach (var layout in new[] { LlavaKeyLayout.Legacy, LlavaKeyLayout.Transformers452 })
            if (source.Contains(layout.Projector + ProbeKey)) return layout;
        var sample = string.Join(", ", source.Entries.Take(5).Select(e => e.Name));
        throw new InvalidDataException($"{where}: not a LLaVA checkpoint: neither '{LlavaKeyLayout.Legacy.Projector}{ProbeKey}' ({LlavaKeyLayout.Legacy.Name}) " +
            $"nor '{LlavaKeyLayout.Transformers452.Projector}{ProbeKey}' ({LlavaKeyLayout.Transformers452.Name}) is there; its first tensors are: {sample}.");
    }

    /// <summary>Loads a LLaVA HF folder (config.json, weights, tokenizer and preprocessor_config.json when present).</summary>
    public static VisualChatModel Load(string folder, Device? device = null)
    {
        ModelFolderWriter.VerifyOrThrow(folder); // folders written by LlavaExport carry a manifest; downloaded ones do not
        var mapping = ReadConfig(Path.Combine(folder, ConfigFile));
        var config = mapping.Config;
        using var source = TensorFiles.Open(folder);
        var layout = DetectLayout(source, folder);
        var lm = new LlamaForCausalLM(mapping.Text, seed: null, initialize: false);
        VisualChatModel? model = null;
        try {
            var encoder = new ClipVisionModel(mapping.Vision, config.VisionFeatureSelect, config.DropClsToken);
            model = new VisualChatModel(config, lm, encoder);
            var tied = mapping.Text.TieWordEmbeddings;
            var options = new LoadOptions
            {
                MapName = layout.CheckpointName,
                // Old transformers saved CLIP's position_ids buffer (arange, not a weight); a tied head may still be written.
                IgnoreUnexpectedWhere = name => name == layout.Vision + "vision_model.embeddings.position_ids"
                    || (tied && name.StartsWith(layout.LmHead, StringComparison.Ordinal)),
            };
            try { StateDict.Load(model, source, options); }
            catch (InvalidDataException e) { throw new InvalidDataException($"LLaVA checkpoint in '{folder}' ({layout.Name} key layout): {e.Message}", e); }
        } catch {
            if (model is not null) model.Dispose(); else lm.Dispose();
            throw;
        }
        if (HasTokenizer(folder)) {
            model.Tokenizer = TokenizerFactory.FromFolder(folder);
            VisualChatProcessor.CheckImageToken(model.Tokenizer, config, folder);
        }
        model.ImageProcessor = VisionEncoderFolder.LoadProcessor(folder, mapping.Vision.ImageSize);
        model.ApplyDefaultTrainability();
        model.eval();
        if (device is not null && device.type != DeviceType.CPU) model.to(device);
        return model;
    }

    /// <summary>The processor of a LLaVA folder: its tokenizer, preprocessor_config.json and LLaVA's template.</summary>
    public static VisualChatProcessor LoadProcessor(string folder)
    {
        var mapping = ReadConfig(Path.Combine(folder, ConfigFile));
        if (!HasTokenizer(folder))
            throw new FileNotFoundException($"LLaVA folder '{folder}' has neither {TokenizerFactory.ModelFileName} nor {TokenizerFactory.JsonFileName}; copy the tokenizer files of the checkpoint next to config.json.");
        var tokenizer = TokenizerFactory.FromFolder(folder);
        VisualChatProcessor.CheckImageToken(tokenizer, mapping.Config, folder);
        return new VisualChatProcessor(tokenizer, VisionEncoderFolder.LoadProcessor(folder, mapping.Vision.ImageSize), mapping.Config.TemplateOptions);
    }

    static bool HasTokenizer(string folder) =>
        File.Exists(Path.Combine(folder, TokenizerFactory.ModelFileName)) || File.Exists(Path.Combine(folder, TokenizerFactory.JsonFileName));

    static string? GetString(JsonObject node, string key, string source) => Get(node, key, source, "a string", v => v.GetValue<string>());
    static int? GetInt(JsonObject node, string key, string source) => Get(node, key, source, "an integer", v => (int?)v.GetValue<int>());
    static bool? GetBool(JsonObject node, string key, string source) => Get(node, key, source, "true or false", v => (bool?)v.GetValue<bool>());

    static T? Get<T>(JsonObject node, string key, string source, string expected, Func<JsonNode, T> read)
    {
        if (node[key] is not { } value) return default;
        try { return read(value); }
        catch (Exception e) when (e is InvalidOperationException or FormatException) {
            throw new InvalidDataException($"{source}: '{key}' is {value.ToJsonString()}, not {expected}.", e);
        }
    }
}
