using System.Text.Json;
using TorchSharp;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Imaging;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// The model folder (see docs/model-folder.md):
/// <code>
/// my-model/
///   visualchat.json            VisualChatConfig: attention mode, projection, encoder kind, image token, template
///   lm/                        a Hugging Face LLaMA folder: config.json, model.safetensors (original vocab rows),
///                              tokenizer.model + added_tokens.json + tokenizer_config.json (with "&lt;image&gt;")
///   vision/                    config.json, model.safetensors, preprocessor_config.json
///   projection.safetensors     the projection's state dict (DSVC keys without the "projection." prefix)
///   embeddings.safetensors     "model.embed_tokens.weight": the trained embedding matrix including the added rows
///   cross_attn.safetensors     causal+cross only: "{layer}.q_proj.weight", ..., "{layer}.attn_gate"
/// </code>
/// Every file is loaded strictly: missing, unexpected or mis-shaped tensors throw, naming the file. The folder is written
/// atomically and carries <c>model-manifest.json</c> (sizes and SHA-256 of every file), checked before loading, so a
/// truncated or mixed folder is refused naming the file.
/// </summary>
public sealed partial class VisualChatModel
{
    public const string LmFolder = "lm", VisionFolder = "vision";
    public const string ProjectionFile = "projection.safetensors", EmbeddingsFile = "embeddings.safetensors", CrossAttentionFile = "cross_attn.safetensors";
    public const string EmbeddingKey = "model.embed_tokens.weight";
    public const string PreprocessorFile = "preprocessor_config.json";

    /// <summary>Saved into lm/ when set (it must hold the image token).</summary>
    public SentencePieceTokenizer? Tokenizer { get; set; }
    /// <summary>Saved as vision/preprocessor_config.json; defaults to the encoder's usual preprocessing.</summary>
    public ImageProcessorConfig? ImageProcessor { get; set; }

    static readonly JsonSerializerOptions IndentedJson = new() { WriteIndented = true };

    /// <summary>Writes the folder atomically with a manifest of its files (<see cref="ModelFolderWriter"/>): a reader
    /// sees the previous model or this one, never a mix.</summary>
    public void Save(string folder) => ModelFolderWriter.Write(folder, WriteFiles);

    void WriteFiles(string folder)
    {
        string lmFolder = Path.Combine(folder, LmFolder), visionFolder = Path.Combine(folder, VisionFolder);
        Directory.CreateDirectory(lmFolder);
        Directory.CreateDirectory(visionFolder);
        Config.Save(Path.Combine(folder, VisualChatConfig.FileName));

        LmConfig.Save(Path.Combine(lmFolder, "config.json"));
        using (var scope = NewDisposeScope()) {
            var lmTensors = lm.state_dict().Select(pair => pair.Key == EmbeddingKey
                ? new KeyValuePair<string, Tensor>(pair.Key, pair.Value.narrow(0, 0, Config.LmVocabSize).contiguous())
                : pair);
            TensorFiles.SaveSafetensors(Path.Combine(lmFolder, "model.safetensors"), lmTensors, new Dictionary<string, string> { ["format"] = "pt" });
            TensorFiles.SaveSafetensors(Path.Combine(folder, EmbeddingsFile),
                new[] { new KeyValuePair<string, Tensor>(EmbeddingKey, lm.model.embed_tokens.weight!.detach()) }, new Dictionary<string, string> { ["format"] = "pt" });
        }
        Tokenizer?.Save(lmFolder);

        VisionEncoder.SaveConfig(Path.Combine(visionFolder, "config.json"));
        StateDict.Save(vision, Path.Combine(visionFolder, "model.safetensors"));
        var processor = ImageProcessor ?? VisionEncoder.DefaultImageProcessor;
        File.WriteAllText(Path.Combine(visionFolder, PreprocessorFile), JsonSerializer.Serialize(processor, IndentedJson));

        StateDict.Save(projection, Path.Combine(folder, ProjectionFile));
        if (cross_attn is not null) StateDict.Save(cross_attn, Path.Combine(folder, CrossAttentionFile));
    }

    /// <summary>Loads a folder written by <see cref="Save"/> (strict), or a Hugging Face LLaVA folder (config.json with
    /// model_type "llava", see <see cref="LlavaCheckpoint"/>), onto <paramref name="device"/> (CPU by default).</summary>
    public static VisualChatModel Load(string folder, Device? device = null)
    {
        if (LlavaCheckpoint.IsLlavaFolder(folder)) return LlavaCheckpoint.Load(folder, device);
        ModelFolderWriter.VerifyOrThrow(folder);
        string configPath = Path.Combine(folder, VisualChatConfig.FileName);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{configPath} is missing; a VisualChat model folder starts with {VisualChatConfig.FileName}.", configPath);
        var config = VisualChatConfig.Load(configPath);
        string lmFolder = Path.Combine(folder, LmFolder), visionFolder = Path.Combine(folder, VisionFolder);
        RequireFile(Path.Combine(lmFolder, "config.json"));
        RequireFile(Path.Combine(visionFolder, "config.json"));
        // The LM and the encoder load as the standalone HF folders they are: no random init, strict, fp32 on CPU.
        var lm = LlamaForCausalLM.FromPretrained(lmFolder);
        var vision = VisionEncoderFolder.Load(visionFolder, clipFeatureSelect: config.VisionFeatureSelect, clipDropClsToken: config.DropClsToken);
        if (vision.Encoder.Kind != config.VisionEncoder)
            throw new InvalidDataException($"{configPath} says vision_encoder \"{config.VisionEncoder}\" but {visionFolder} holds a \"{vision.Encoder.Kind}\" encoder ({vision.Encoder.GetType().Name}).");
        config.UseVisionEncoder(vision.Encoder);
        var model = new VisualChatModel(config, lm, vision.Encoder) { ImageProcessor = vision.Processor };
        LoadStrict(model.projection, Path.Combine(folder, ProjectionFile));
        if (model.cross_attn is not null) LoadStrict(model.cross_attn, Path.Combine(folder, CrossAttentionFile));
        using (var source = TensorFiles.Open(RequireFile(Path.Combine(folder, EmbeddingsFile)))) {
            var target = model.lm.model.embed_tokens.weight!;
            var unexpected = source.Entries.Where(e => e.Name != EmbeddingKey).Select(e => e.Name).ToArray();
            if (unexpected.Length > 0) throw new InvalidDataException($"{EmbeddingsFile} in {folder}: unexpected tensors {string.Join(", ", unexpected)}; it holds only '{EmbeddingKey}'.");
            var entry = source.Describe(EmbeddingKey);
            if (!entry.Shape.SequenceEqual(target.shape))
                throw new InvalidDataException($"{EmbeddingsFile} in {folder}: '{EmbeddingKey}' is [{string.Join(", ", entry.Shape)}] but the model needs [{string.Join(", ", target.shape)}] (vocab + added tokens).");
            using var noGrad = no_grad();
            using var values = source.Read(EmbeddingKey, target.dtype);
            target.copy_(values);
        }
        if (File.Exists(Path.Combine(lmFolder, TokenizerFactory.ModelFileName)) || File.Exists(Path.Combine(lmFolder, TokenizerFactory.JsonFileName))) {
            model.Tokenizer = TokenizerFactory.FromFolder(lmFolder);
            VisualChatProcessor.CheckImageToken(model.Tokenizer, config, lmFolder);
        }
        model.ApplyDefaultTrainability();
        if (device is not null && device.type != DeviceType.CPU) model.to(device);
        return model;
    }

    /// <summary>True when <paramref name="folder"/> is something <see cref="Load"/> reads: a VisualChat model folder
    /// (visualchat.json) or a LLaVA HF folder.</summary>
    public static bool IsModelFolder(string folder) =>
        File.Exists(Path.Combine(folder, VisualChatConfig.FileName)) || LlavaCheckpoint.IsLlavaFolder(folder);

    static string RequireFile(string path) =>
        File.Exists(path) ? path : throw new FileNotFoundException($"The VisualChat model folder lacks {path}; see docs/model-folder.md for its layout.", path);

    static void LoadStrict(nn.Module module, string path)
    {
        using var source = TensorFiles.Open(RequireFile(path));
        StateDict.Load(module, source, new LoadOptions { Strict = true });
    }
}
