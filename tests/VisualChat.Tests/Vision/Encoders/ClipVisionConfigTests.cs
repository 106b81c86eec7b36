using VisualChat.Vision;
using VisualChat.Vision.Encoders;

namespace VisualChat.Tests.Vision.Encoders;

public class ClipVisionConfigTests
{
    private const string VisionModelConfig = """
        {
          "architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
          "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
          "image_size": 336, "patch_size": 14, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05,
          "num_channels": 3, "projection_dim": 768, "dropout": 0.0
        }
        """;

    [Fact]
    public void ParsesClipVisionModelConfig()
    {
        var config = ClipVisionConfig.Parse(VisionModelConfig);
        Assert.Equal(1024, config.HiddenSize);
        Assert.Equal(4096, config.IntermediateSize);
        Assert.Equal(24, config.NumHiddenLayers);
        Assert.Equal(16, config.NumAttentionHeads);
        Assert.Equal(336, config.ImageSize);
        Assert.Equal(14, config.PatchSize);
        Assert.Equal("quick_gelu", config.HiddenAct);
        Assert.Equal(768, config.ProjectionDim);
        Assert.Equal(577, config.NumPositions);
    }

    [Fact]
    public void ParsesVisionConfigOfFullClipModelConfig()
    {
        var config = ClipVisionConfig.Load(VisionTestSupport.SharedPath("models", "configs", "qwen-clip-config.json"));
        Assert.Equal(1664, config.HiddenSize);
        Assert.Equal(8192, config.IntermediateSize);
        Assert.Equal(48, config.NumHiddenLayers);
        Assert.Equal(16, config.NumAttentionHeads);
        Assert.Equal(224, config.ImageSize);
        Assert.Equal(14, config.PatchSize);
        Assert.Equal("gelu", config.HiddenAct);
        Assert.Equal(1e-5, config.LayerNormEps);
        Assert.Equal(1280, config.ProjectionDim); // top-level projection_dim of the CLIPModel config
        Assert.Equal(3, config.NumChannels);
    }

    [Fact]
    public void MissingKeysTakeHuggingFaceDefaults()
    {
        var config = ClipVisionConfig.Parse("""{"model_type": "clip_vision_model", "hidden_size": 64, "num_attention_heads": 4}""");
        Assert.Equal(32, config.PatchSize);
        Assert.Equal(224, config.ImageSize);
        Assert.Equal("quick_gelu", config.HiddenAct);
        Assert.Equal(12, config.NumHiddenLayers);
    }

    [Fact]
    public void SaveThenLoadRoundTrips()
    {
        var path = Path.Combine(Path.GetTempPath(), $"vision-config-{Guid.NewGuid():N}", "config.json");
        try
        {
            var original = ClipVisionConfig.ClipVitLargePatch14_336();
            original.Save(path);
            var loaded = ClipVisionConfig.Load(path);
            Assert.Equal(original.HiddenSize, loaded.HiddenSize);
            Assert.Equal(336, loaded.ImageSize);
            Assert.Equal(original.HiddenAct, loaded.HiddenAct);
            Assert.Equal(original.NumHiddenLayers, loaded.NumHiddenLayers);
            Assert.Contains("\"hidden_act\": \"quick_gelu\"", File.ReadAllText(path));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(path)!, true);
        }
    }

    [Fact]
    public void PresetsHaveTheReleasedShapes()
    {
        var large = ClipVisionConfig.Preset("openai/clip-vit-large-patch14");
        Assert.Equal((224, 14, 1024, 24, 16, 4096, "quick_gelu"),
            (large.ImageSize, large.PatchSize, large.HiddenSize, large.NumHiddenLayers, large.NumAttentionHeads, large.IntermediateSize, large.HiddenAct));
        Assert.Equal(336, ClipVisionConfig.Preset("clip-vit-large-patch14-336").ImageSize);
        Assert.Equal(17, ClipVisionConfig.Preset("tiny").NumPositions);
        Assert.Throws<ArgumentException>(() => ClipVisionConfig.Preset("clip-vit-huge"));
    }

    [Fact]
    public void RejectsInconsistentOrForeignConfigs()
    {
        Assert.Throws<InvalidDataException>(() => ClipVisionConfig.Parse("""{"model_type": "llama", "hidden_size": 64}"""));
        Assert.Throws<InvalidDataException>(() => ClipVisionConfig.Parse("""{"hidden_size": 30, "num_attention_heads": 4}"""));
        Assert.Throws<InvalidDataException>(() => ClipVisionConfig.Parse("""{"image_size": 30, "patch_size": 14, "hidden_size": 32, "num_attention_heads": 4}"""));
        Assert.Throws<InvalidDataException>(() => ClipVisionConfig.Parse("""{"hidden_act": "relu", "hidden_size": 32, "num_attention_heads": 4}"""));
    }
}
