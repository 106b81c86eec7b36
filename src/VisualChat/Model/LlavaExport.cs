using System.Text.Json;
using System.Text.Json.Nodes;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Projection;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// Writes a <see cref="VisualChatModel"/> as a Hugging Face LLaVA folder (<c>LlavaForConditionalGeneration</c>: config.json,
/// safetensors shards with an index, tokenizer, preprocessor_config.json) that transformers and vLLM load. Only models
/// LLaVA can express map: a CLIP encoder, the <c>mlp2x_gelu</c> projection and causal attention; anything else is refused
/// naming what does not map. Tensors are written one at a time from the model (converted to the requested dtype as
/// they are due), so no second copy of the model is made.
/// </summary>
public static class LlavaExport
{
    public const long DefaultMaxShardBytes = 5L * 1024 * 1024 * 1024;

    /// <summary>Why <paramref name="model"/> cannot be written as LLaVA, or null when it can.</summary>
    public static string? WhyNot(VisualChatModel model)
    {
        if (model.VisionEncoder is not ClipVisionModel clip)
            return $"its vision encoder is \"{model.Config.VisionEncoder}\"; LLaVA's vision tower is a CLIP vision model (a Qwen-VL encoder has no LLaVA equivalent)";
        if (model.Projection.Kind != ProjectionKind.Mlp2xGelu)
            return $"its projection is \"{model.Config.Projection}\"; LLaVA's multi_modal_projector is mlp2x_gelu (Linear → GELU → Linear), which baseline/vit/perceiver do not map onto";
        if (model.Config.AttentionMode != AttentionMode.Causal)
            return $"its attention_mode is \"{model.Config.AttentionModeName}\"; LLaVA runs plain causal attention, so MMCA or gated cross-attention would be lost";
        if (clip.FeatureSelect == VisionFeatureSelect.PooledOutput)
            return "it uses CLIP's pooled output; LLaVA takes a hidden layer's tokens (vision_feature_layer)";
        if (model.Config.ImageTokenId >= model.EmbeddingRows)
            return $"its image_token_id {model.Config.ImageTokenId} has no embedding row";
        return null;
    }

    /// <summary>Writes the LLaVA folder atomically (<see cref="ModelFolderWriter"/>).</summary>
    /// <param name="dtype">Storage type of floating tensors (default float32); config.json's torch_dtype says it.</param>
    public static void Write(VisualChatModel model, string folder, ScalarType dtype = ScalarType.Float32, long maxShardBytes = DefaultMaxShardBytes)
    {
        if (WhyNot(model) is { } reason)
            throw new InvalidOperationException($"This model cannot be exported as a LLaVA (llava-hf) folder: {reason}.");
        ModelFolderWriter.Write(folder, target => WriteFiles(model, target, dtype, maxShardBytes));
    }

    static void WriteFiles(VisualChatModel model, string folder, ScalarType dtype, long maxShardBytes)
    {
        var clip = (ClipVisionModel)model.VisionEncoder;
        var layout = LlavaKeyLayout.Legacy;
        // LLaVA's LM has one vocabulary for embedding and head. The embedding matrix (with the image row) sets it; an
        // untied head with fewer rows (DSVC keeps the original vocabulary) gets zero rows for the added ids.
        int vocab = model.EmbeddingRows;
        var text = model.LmConfig.Clone();
        text.VocabSize = vocab;
        text.TorchDtype = DevicePolicy.DTypeName(dtype);
        text.Dtype = null;
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlavaForConditionalGeneration"),
            ["model_type"] = LlavaCheckpoint.ModelType,
            ["image_token_index"] = model.Config.ImageTokenId,
            ["vision_feature_layer"] = clip.FeatureSelect == VisionFeatureSelect.PenultimateLayer ? -2 : -1,
            ["vision_feature_select_strategy"] = clip.DropClsToken ? "default" : "full",
            ["projector_hidden_act"] = "gelu",
            ["multimodal_projector_bias"] = true,
            ["ignore_index"] = -100,
            ["tie_word_embeddings"] = text.TieWordEmbeddings,
            ["torch_dtype"] = DevicePolicy.DTypeName(dtype),
            ["text_config"] = JsonNode.Parse(text.ToJson()),
            ["vision_config"] = JsonNode.Parse(JsonSerializer.Serialize(clip.Config)),
        };
        if (model.Tokenizer is { } tokenizer) config["pad_token_id"] = tokenizer.PadId;
        File.WriteAllText(Path.Combine(folder, LlavaCheckpoint.ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

        var tensors = model.state_dict();
        var names = new List<(string Name, long[] Shape)>();
        var moduleOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (moduleName, tensor) in tensors) {
            var name = layout.CheckpointName(moduleName)
                ?? throw new InvalidOperationException($"State-dict tensor '{moduleName}' has no place in the LLaVA layout.");
            var shape = moduleName == "lm.lm_head.weight" ? new long[] { vocab, tensor.shape[1] } : tensor.shape;
            names.Add((name, shape));
            moduleOf[name] = moduleName;
        }
        TensorFiles.SaveShardedStreaming(folder, names, dtype, (name, shape) => {
            var tensor = tensors[moduleOf[name]].detach();
            if (tensor.shape[0] == shape[0]) return tensor;
            using var padding = zeros(new[] { shape[0] - tensor.shape[0], shape[1] }, tensor.dtype);
            return cat(new[] { tensor, padding }, 0);
        }, maxShardBytes, metadata: new Dictionary<string, string> { ["format"] = "pt" });

        model.Tokenizer?.Save(folder);
        var processor = model.ImageProcessor ?? model.VisionEncoder.DefaultImageProcessor;
        File.WriteAllText(Path.Combine(folder, VisualChatModel.PreprocessorFile), JsonSerializer.Serialize(processor, new JsonSerializerOptions { WriteIndented = true }));
    }
}
