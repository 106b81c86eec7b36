using System.Text.Json.Nodes;
using TorchSharp;
using VisualChat.Tests.Vision.Encoders;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Imaging;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Pretrained;

public class VisionEncoderFolderTests
{
    [Theory]
    [InlineData("tiny")]
    [InlineData("qwen-tiny")]
    public void WrittenPresetLoadsStrictlyAndMatchesTheInMemoryPreset(string preset)
    {
        using var temp = new TempFolder();
        var folder = temp.Sub(preset);
        var info = VisionPresets.Write(preset, folder, ScalarType.Float32, seed: 7);
        Assert.True(File.Exists(Path.Combine(folder, "config.json")));
        Assert.True(File.Exists(Path.Combine(folder, "preprocessor_config.json")));

        var (encoder, processor) = VisionEncoderFolder.Load(folder);
        using var module = (nn.Module)encoder;
        using var reference = (nn.Module)VisionPresets.Create(preset, seed: 7);
        using var pixels = PretrainedTestSupport.Pixels(2, info.Output.ImageSize);
        using var loaded = encoder.Encode(pixels);
        using var expected = ((IVisionEncoder)reference).Encode(pixels);

        Assert.Equal(new long[] { 2, info.Output.OutputTokens, info.Output.OutputWidth }, loaded.shape);
        Assert.Contains($"{info.Output.OutputTokens} tokens x {info.Output.OutputWidth}", VisionPresets.Describe(preset));
        Assert.True(PretrainedTestSupport.Same(loaded, expected), "a written preset must load to the same weights Create builds");
        Assert.True(encoder.IsFrozen);
        Assert.Equal(info.Output.ImageSize, processor.CropOutputSize().Height);
    }

    [Theory]
    [InlineData("tiny")]
    [InlineData("qwen-tiny")]
    public void SaveThenLoadGivesIdenticalOutputs(string preset)
    {
        using var temp = new TempFolder();
        var encoder = VisionPresets.Create(preset, seed: 3);
        using var module = (nn.Module)encoder;
        var processor = VisionPresets.Info(preset).Processor;
        VisionEncoderFolder.Save(temp.Path, encoder, processor);

        var loaded = VisionEncoderFolder.Load(temp.Path);
        using var loadedModule = (nn.Module)loaded.Encoder;
        using var pixels = PretrainedTestSupport.Pixels(1, encoder.ImageSize, 1.1);
        using var before = encoder.Encode(pixels);
        using var after = loaded.Encoder.Encode(pixels);
        Assert.True(PretrainedTestSupport.Same(before, after));
        Assert.Equal(encoder.EncoderId, loaded.Encoder.EncoderId);
        Assert.Equal(processor.CropOutputSize(), loaded.Processor.CropOutputSize());
        Assert.Equal(preset == "tiny" ? VisionCheckpointLayout.ClipVisionModel : VisionCheckpointLayout.QwenVisualChat, loaded.Layout);
        Assert.Empty(loaded.Report.Missing);
    }

    [Fact]
    public void HalfPrecisionCheckpointIsConvertedToFloat32WhileLoading()
    {
        using var temp = new TempFolder();
        VisionPresets.Write("tiny", temp.Path, ScalarType.BFloat16, seed: 5);
        Assert.Equal(ScalarType.BFloat16, TensorFiles.Open(temp.Path).Describe("vision_model.post_layernorm.weight").DType);

        var loaded = VisionEncoderFolder.Load(temp.Path);
        using var module = (nn.Module)loaded.Encoder;
        using var reference = (nn.Module)VisionPresets.Create("tiny", seed: 5);
        var expected = reference.state_dict();
        foreach (var (name, tensor) in module.state_dict())
        {
            Assert.Equal(ScalarType.Float32, tensor.dtype);
            using var rounded = expected[name].to(ScalarType.BFloat16).to(ScalarType.Float32);
            Assert.True(PretrainedTestSupport.Same(tensor, rounded), $"{name} should be the bf16-rounded value");
        }
    }

    [Fact]
    public void FullClipModelFolderLoadsTheVisionTowerAndIgnoresTheRest()
    {
        using var temp = new TempFolder();
        var tower = (ClipVisionModel)VisionPresets.Create("tiny", seed: 11);
        using var towerModule = tower;
        var tensors = tower.state_dict().ToDictionary(p => p.Key, p => p.Value);
        tensors["vision_model.embeddings.position_ids"] = arange(tower.Config.NumPositions, dtype: ScalarType.Int64).unsqueeze(0);
        tensors["text_model.embeddings.token_embedding.weight"] = randn(50, 24);
        tensors["text_model.embeddings.position_embedding.weight"] = randn(8, 24);
        tensors["text_model.embeddings.position_ids"] = arange(8, dtype: ScalarType.Int64).unsqueeze(0);
        tensors["text_model.final_layer_norm.weight"] = ones(24);
        tensors["visual_projection.weight"] = randn(16, 32);
        tensors["text_projection.weight"] = randn(16, 24);
        tensors["logit_scale"] = tensor(2.6592f);
        TensorFiles.SaveSafetensors(Path.Combine(temp.Path, "model.safetensors"), tensors);
        var vision = JsonNode.Parse(File.ReadAllText(WriteTinyClipConfig(temp.Sub("probe"))))!.AsObject();
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("CLIPModel"),
            ["model_type"] = "clip",
            ["projection_dim"] = 16,
            ["text_config"] = new JsonObject { ["hidden_size"] = 24, ["model_type"] = "clip_text_model" },
            ["vision_config"] = vision.DeepClone(),
        };
        File.WriteAllText(Path.Combine(temp.Path, "config.json"), config.ToJsonString());

        var loaded = VisionEncoderFolder.Load(temp.Path);
        using var module = (nn.Module)loaded.Encoder;
        Assert.Equal(VisionCheckpointLayout.ClipModel, loaded.Layout);
        Assert.Contains("logit_scale", loaded.IgnoredTensors);
        Assert.Contains("vision_model.embeddings.position_ids", loaded.IgnoredTensors);
        using var pixels = PretrainedTestSupport.Pixels(1, 32);
        using var expected = tower.Encode(pixels);
        using var actual = loaded.Encoder.Encode(pixels);
        Assert.True(PretrainedTestSupport.Same(expected, actual));
        // No preprocessor_config.json in the folder: CLIP preprocessing at the tower's size.
        Assert.Equal((32, 32), loaded.Processor.CropOutputSize());
    }

    [Fact]
    public void TextTowerKeysAreUnexpectedForAVisionOnlyConfig()
    {
        using var temp = new TempFolder();
        VisionPresets.Write("tiny", temp.Path);
        var tensors = PretrainedTestSupport.ReadAll(temp.Path);
        tensors["text_projection.weight"] = randn(16, 24);
        TensorFiles.SaveSafetensors(Path.Combine(temp.Path, "model.safetensors"), tensors);
        var error = Assert.Throws<InvalidDataException>(() => VisionEncoderFolder.Load(temp.Path));
        Assert.Contains("text_projection.weight", error.Message);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void OriginalQwenVlCheckpointLoadsTheVisualTower(bool qwenVlConfig)
    {
        using var temp = new TempFolder();
        // A Qwen-VL config.json's "visual" section keeps the final proj; its defaults need output_dim ≥ 128 and a 256-row table.
        var config = qwenVlConfig
            ? new QwenVisionConfig { ImageSize = 28, PatchSize = 14, Width = 16, Layers = 1, Heads = 2, MlpSize = 32, OutputDim = 128, NQueries = 4, UseOutputProjection = true }
            : QwenVisionConfig.Tiny();
        var tower = new QwenVisionTransformer(config);
        using var towerModule = tower;
        VisionWeightInit.Initialize(tower, seed: 2);
        var tensors = tower.state_dict().ToDictionary(p => QwenVisionTransformer.QwenVlCheckpointPrefix + p.Key, p => p.Value);
        tensors["transformer.wte.weight"] = randn(10, 8);
        tensors["transformer.h.0.attn.c_attn.weight"] = randn(24, 8);
        tensors["lm_head.weight"] = randn(10, 8);
        if (!qwenVlConfig) tensors["transformer.visual.proj"] = randn(config.OutputDim, config.OutputDim);
        TensorFiles.SaveSafetensors(Path.Combine(temp.Path, "model.safetensors"), tensors);
        var configJson = qwenVlConfig
            ? new JsonObject
            {
                ["model_type"] = "qwen",
                ["visual"] = new JsonObject
                {
                    ["image_size"] = 28, ["patch_size"] = 14, ["width"] = 16, ["layers"] = 1, ["heads"] = 2,
                    ["mlp_ratio"] = 2.0, ["output_dim"] = 128, ["n_queries"] = 4,
                },
            }.ToJsonString()
            : System.Text.Json.JsonSerializer.Serialize(config);
        File.WriteAllText(Path.Combine(temp.Path, "config.json"), configJson);

        var loaded = VisionEncoderFolder.Load(temp.Path);
        using var module = (nn.Module)loaded.Encoder;
        Assert.Equal(VisionCheckpointLayout.QwenVl, loaded.Layout);
        Assert.Contains("lm_head.weight", loaded.IgnoredTensors);
        using var pixels = PretrainedTestSupport.Pixels(1, config.ImageSize);
        using var expected = tower.Encode(pixels);
        using var actual = loaded.Encoder.Encode(pixels);
        Assert.True(PretrainedTestSupport.Same(expected, actual));
    }

    [Fact]
    public void DeepSpeedVisualChatPytorchBinLoadsWithHalfToFloatConversion()
    {
        var folder = PretrainedTestSupport.FixturePath("qwen-dsvc-micro");
        var loaded = VisionEncoderFolder.Load(folder);
        using var module = (nn.Module)loaded.Encoder;
        Assert.Equal(VisionCheckpointLayout.QwenVisualChat, loaded.Layout);
        Assert.Equal((4, 16), (loaded.Encoder.OutputTokens, loaded.Encoder.OutputWidth));

        using var reference = new QwenVisionTransformer(QwenVisionConfig.Load(Path.Combine(folder, "config.json")));
        VisionTestSupport.ApplyFormulaWeights(reference);
        var expected = reference.state_dict();
        foreach (var (name, tensor) in module.state_dict())
        {
            using var rounded = expected[name].to(ScalarType.Float16).to(ScalarType.Float32);
            Assert.True(PretrainedTestSupport.Same(tensor, rounded), $"{name} differs from the formula written by make_qwen_dsvc_bin.py");
        }
        using var pixels = PretrainedTestSupport.Pixels(1, 28);
        using var features = loaded.Encoder.Encode(pixels);
        Assert.Equal(new long[] { 1, 4, 16 }, features.shape);
        Assert.False(features.isnan().any().item<bool>());
    }

    [Fact]
    public void DeepSpeedVisualChatsClipConfigSelectsTheQwenEncoderAndIsCheckedBeforeAllocating()
    {
        // DSVC's qwen_clip folder ships a CLIP-bigG config; the Qwen keys decide the architecture and the config gives
        // the full size (width 1664, 48 layers), which the micro weights do not fit: this must fail before building 1.9B parameters.
        using var temp = new TempFolder();
        File.Copy(PretrainedTestSupport.FixturePath("qwen-dsvc-micro", "pytorch_model.bin"), Path.Combine(temp.Path, "pytorch_model.bin"));
        File.Copy(VisionTestSupport.SharedPath("models", "configs", "qwen-clip-config.json"), Path.Combine(temp.Path, "config.json"));
        var error = Assert.Throws<InvalidDataException>(() => VisionEncoderFolder.Load(temp.Path));
        Assert.Contains("'conv1.weight' has shape [16, 3, 14, 14] but the config needs [1664, 3, 14, 14]", error.Message);
        Assert.Contains("config.json", error.Message);
    }

    [Fact]
    public void FromPretrainedChecksTheArchitecture()
    {
        var folder = PretrainedTestSupport.FixturePath("qwen-dsvc-micro");
        using var qwen = QwenVisionTransformer.FromPretrained(folder);
        Assert.Equal(16, qwen.OutputWidth);
        var error = Assert.Throws<InvalidDataException>(() => ClipVisionModel.FromPretrained(folder));
        Assert.Contains("QwenVisualChat", error.Message);
    }

    [Fact]
    public void MissingTensorIsNamed()
    {
        var message = LoadAfterEditing(tensors => tensors.Remove("vision_model.encoder.layers.1.mlp.fc2.bias"));
        Assert.Contains("vision_model.encoder.layers.1.mlp.fc2.bias", message);
        Assert.Contains("missing", message);
    }

    [Fact]
    public void ExtraVisionTensorIsNamed()
    {
        var message = LoadAfterEditing(tensors => tensors["vision_model.encoder.layers.2.mlp.fc1.weight"] = zeros(64, 32));
        Assert.Contains("vision_model.encoder.layers.2.mlp.fc1.weight", message);
        Assert.Contains("unexpected", message);
    }

    [Fact]
    public void WrongShapeIsNamed()
    {
        var message = LoadAfterEditing(tensors => tensors["vision_model.post_layernorm.weight"] = ones(31));
        Assert.Contains("vision_model.post_layernorm.weight", message);
        Assert.Contains("[32]", message);
        Assert.Contains("[31]", message);
    }

    [Fact]
    public void UnknownCheckpointNamesWhatWasExpected()
    {
        using var temp = new TempFolder();
        TensorFiles.SaveSafetensors(Path.Combine(temp.Path, "model.safetensors"),
            new Dictionary<string, Tensor> { ["model.embed_tokens.weight"] = zeros(4, 4) });
        File.WriteAllText(Path.Combine(temp.Path, "config.json"), "{}");
        var error = Assert.Throws<InvalidDataException>(() => VisionEncoderFolder.Load(temp.Path));
        Assert.Contains("model.embed_tokens.weight", error.Message);
        Assert.Contains("conv1.weight", error.Message);
    }

    [Fact]
    public void ProcessorWithAnotherCropSizeIsRejected()
    {
        using var temp = new TempFolder();
        VisionPresets.Write("tiny", temp.Path);
        VisionEncoderFolder.WriteProcessor(temp.Path, ImageProcessorConfig.Clip224);
        var error = Assert.Throws<InvalidDataException>(() => VisionEncoderFolder.Load(temp.Path));
        Assert.Contains("preprocessor_config.json", error.Message);
        Assert.Contains("224", error.Message);
    }

    private static string LoadAfterEditing(Action<Dictionary<string, Tensor>> edit)
    {
        using var temp = new TempFolder();
        VisionPresets.Write("tiny", temp.Path);
        var tensors = PretrainedTestSupport.ReadAll(temp.Path);
        edit(tensors);
        TensorFiles.SaveSafetensors(Path.Combine(temp.Path, "model.safetensors"), tensors);
        return Assert.Throws<InvalidDataException>(() => VisionEncoderFolder.Load(temp.Path)).Message;
    }

    private static string WriteTinyClipConfig(string folder)
    {
        VisionEncoderFolder.WriteConfig(folder, ClipVisionConfig.Tiny(), ScalarType.Float32);
        return Path.Combine(folder, "config.json");
    }
}
