using System.Text.Json.Nodes;
using TorchSharp;
using VisualChat.Conversations;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Tests.Multimodal;

/// <summary>The vision encoder chosen by <c>visualchat.json</c>'s name, built, saved and loaded without switching on its type.</summary>
public sealed class VisionEncoderKindTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("vc-encoder-kind").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static VisualChatModel TinyQwen()
    {
        var tokenizer = VisualChatPresets.CreateTinyTokenizer();
        var lmConfig = new LlamaConfig {
            VocabSize = tokenizer.BaseVocabSize, HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 2, NumAttentionHeads = 4,
            NumKeyValueHeads = 2, MaxPositionEmbeddings = 256, RmsNormEps = 1e-6,
        };
        var config = new VisualChatConfig {
            VisionEncoder = "qwen", QwenVision = QwenVisionConfig.Tiny(), Projection = "baseline",
            LmVocabSize = tokenizer.BaseVocabSize, ImageTokenId = ConversationTemplate.ImageTokenId(tokenizer), SystemPrompt = null,
        };
        return new VisualChatModel(config, lmConfig, seed: 4) { Tokenizer = tokenizer };
    }

    [Fact]
    public void QwenModelSavesAndLoadsAsQwen_AndAFolderWhoseConfigNamesAnotherKindIsRefused()
    {
        var folder = Path.Combine(_dir, "qwen");
        Dictionary<string, Tensor> saved;
        using (var model = TinyQwen()) {
            Assert.Equal("qwen", model.VisionEncoder.Kind);
            Assert.IsType<QwenVisionTransformer>(model.VisionEncoder);
            model.Save(folder);
            saved = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        }
        using (var loaded = VisualChatModel.Load(folder)) {
            Assert.Equal("qwen", loaded.Config.VisionEncoder);
            Assert.NotNull(loaded.Config.QwenVision);
            Assert.Null(loaded.Config.ClipVision);
            foreach (var (name, tensor) in loaded.state_dict())
                Assert.True(tensor.allclose(saved[name], rtol: 0, atol: 0), $"{name} differs after save and load");
        }

        var configPath = Path.Combine(folder, VisualChatConfig.FileName);
        var json = JsonNode.Parse(File.ReadAllText(configPath))!;
        json["vision_encoder"] = "clip";
        File.WriteAllText(configPath, json.ToJsonString());
        var error = Assert.Throws<InvalidDataException>(() => VisualChatModel.Load(folder));
        Assert.Contains("\"clip\"", error.Message);
        Assert.Contains("\"qwen\"", error.Message);

        json["vision_encoder"] = "siglip";
        File.WriteAllText(configPath, json.ToJsonString());
        error = Assert.Throws<InvalidDataException>(() => VisualChatModel.Load(folder));
        Assert.Contains("siglip", error.Message);
        Assert.Contains("\"clip\" or \"qwen\"", error.Message);
    }
}
