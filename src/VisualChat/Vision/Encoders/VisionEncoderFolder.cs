using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using VisualChat.Vision.Imaging;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>Which checkpoint layout a vision folder held.</summary>
public enum VisionCheckpointLayout
{
    /// <summary>HF <c>CLIPVisionModel</c>: keys <c>vision_model.*</c>.</summary>
    ClipVisionModel,
    /// <summary>HF <c>CLIPModel</c> (both towers): the vision tower is loaded; text tower, projections and logit_scale are ignored.</summary>
    ClipModel,
    /// <summary>DeepSpeed-VisualChat's extracted Qwen-VL encoder: unprefixed keys (<c>conv1.weight</c>, <c>attn_pool.*</c>, ...).</summary>
    QwenVisualChat,
    /// <summary>An original Qwen-VL / Qwen-VL-Chat checkpoint: the visual tower under <c>transformer.visual.</c>, the LM ignored.</summary>
    QwenVl,
}

/// <summary>An encoder loaded from a folder with its preprocessing; deconstructs to (Encoder, Processor).</summary>
public sealed record LoadedVisionEncoder(IVisionEncoder Encoder, ImageProcessorConfig Processor)
{
    public required VisionCheckpointLayout Layout { get; init; }
    public required LoadReport Report { get; init; }

    /// <summary>Checkpoint tensors left unused on purpose (other towers, the LM, position_ids), by checkpoint name.</summary>
    public required IReadOnlyList<string> IgnoredTensors { get; init; }
}

/// <summary>
/// Loads and saves vision encoders as Hugging Face-style folders (config.json, model.safetensors or pytorch_model.bin,
/// preprocessor_config.json). The architecture is decided by the checkpoint's keys, because DeepSpeed-VisualChat's
/// Qwen encoder folder ships a CLIP config: <c>vision_model.embeddings.patch_embedding.weight</c> → CLIP,
/// <c>conv1.weight</c> → DSVC Qwen, <c>transformer.visual.conv1.weight</c> → original Qwen-VL. Loading is strict: a
/// missing, unexpected or mis-shaped tensor throws naming it (only tensors that belong to other towers are ignored,
/// by name). Weights are fp32 on the CPU (bf16/fp16 checkpoints are converted tensor by tensor while loading) and
/// then moved to <c>device</c> when one is given.
/// </summary>
public static class VisionEncoderFolder
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = "model.safetensors";
    public const string PreprocessorFile = "preprocessor_config.json";

    /// <summary>model_type written into config.json of a saved <see cref="QwenVisionTransformer"/>.</summary>
    public const string QwenModelType = "qwen_vl_visual";

    private const string ClipProbe = "vision_model.embeddings.patch_embedding.weight";
    private const string QwenProbe = "conv1.weight";

    /// <summary>Keys of a full CLIPModel outside the vision tower, ignored when its config has "vision_config".</summary>
    private static readonly HashSet<string> ClipModelExtras = new(StringComparer.Ordinal)
        { "visual_projection.weight", "text_projection.weight", "logit_scale" };

    /// <summary>Older transformers saved CLIP's position_ids buffer; it is arange(num_positions), never a weight.</summary>
    private const string ClipPositionIds = "vision_model.embeddings.position_ids";

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static LoadedVisionEncoder Load(string folder, Device? device = null,
        VisionFeatureSelect clipFeatureSelect = VisionFeatureSelect.LastHiddenState, bool clipDropClsToken = false)
    {
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Vision encoder folder '{folder}' does not exist; pass a folder with config.json and model.safetensors or pytorch_model.bin.");
        var configPath = Path.Combine(folder, ConfigFile);
        if (!File.Exists(configPath))
            throw new FileNotFoundException($"Vision encoder folder '{folder}' has no {ConfigFile}; copy the model's config.json next to its weights.", configPath);
        var configJson = File.ReadAllText(configPath);

        using var source = TensorFiles.Open(folder);
        IVisionEncoder encoder;
        VisionCheckpointLayout layout;
        Func<string, string> checkpointName = name => name;
        LoadReport report;
        if (source.Contains(ClipProbe))
        {
            var config = ParseConfig(configPath, () => ClipVisionConfig.Parse(configJson));
            var isClipModel = HasObject(configJson, "vision_config");
            layout = isClipModel ? VisionCheckpointLayout.ClipModel : VisionCheckpointLayout.ClipVisionModel;
            var options = new LoadOptions
            {
                IgnoreUnexpectedWhere = name => name == ClipPositionIds
                    || (isClipModel && (name.StartsWith("text_model.", StringComparison.Ordinal) || ClipModelExtras.Contains(name))),
            };
            CheckBeforeBuilding(folder, source, VisionTensorLayout.Clip(config), options);
            var model = new ClipVisionModel(config, clipFeatureSelect, clipDropClsToken);
            encoder = model;
            report = LoadInto(model, source, options);
        }
        else if (source.Contains(QwenProbe) || source.Contains(QwenVisionTransformer.QwenVlCheckpointPrefix + QwenProbe))
        {
            var prefixed = !source.Contains(QwenProbe);
            var config = ParseConfig(configPath, () => QwenVisionConfig.Parse(configJson));
            layout = prefixed ? VisionCheckpointLayout.QwenVl : VisionCheckpointLayout.QwenVisualChat;
            var prefix = QwenVisionTransformer.QwenVlCheckpointPrefix;
            if (prefixed) checkpointName = name => prefix + name;
            var options = prefixed
                ? new LoadOptions
                {
                    MapName = name => prefix + name,
                    // The LM is not ours; Qwen-VL's final proj is dropped (as DSVC's extraction does) unless the config keeps it.
                    IgnoreUnexpectedWhere = name => !name.StartsWith(prefix, StringComparison.Ordinal)
                        || (!config.UseOutputProjection && name == prefix + "proj"),
                }
                : new LoadOptions();
            CheckBeforeBuilding(folder, source, VisionTensorLayout.Qwen(config), options);
            var model = new QwenVisionTransformer(config);
            encoder = model;
            report = LoadInto(model, source, options);
        }
        else
        {
            var sample = string.Join(", ", source.Entries.Take(5).Select(e => e.Name));
            throw new InvalidDataException(
                $"Vision checkpoint in '{folder}' is neither CLIP (no '{ClipProbe}') nor Qwen-VL (no '{QwenProbe}' or " +
                $"'{QwenVisionTransformer.QwenVlCheckpointPrefix}{QwenProbe}'); its first tensors are: {sample}.");
        }

        if (device is not null && device.type != DeviceType.CPU)
            ((nn.Module)encoder).to(device);
        var processor = LoadProcessor(folder, encoder.ImageSize);
        var used = report.Loaded.Select(checkpointName).ToHashSet(StringComparer.Ordinal);
        var ignored = source.Entries.Select(e => e.Name).Where(name => !used.Contains(name)).ToList();
        return new LoadedVisionEncoder(encoder, processor) { Layout = layout, Report = report, IgnoredTensors = ignored };
    }

    /// <summary>
    /// Writes config.json, model.safetensors (floating tensors stored as <paramref name="dtype"/>) and
    /// preprocessor_config.json; <see cref="Load"/> reads the folder back to an encoder with identical outputs (fp32).
    /// </summary>
    public static void Save(string folder, IVisionEncoder encoder, ImageProcessorConfig processor, ScalarType dtype = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        ArgumentNullException.ThrowIfNull(processor);
        CheckProcessor(processor, encoder.ImageSize, "the processor passed to Save");
        Directory.CreateDirectory(folder);
        var module = encoder as nn.Module ?? throw new ArgumentException($"Encoder {encoder.GetType().Name} is not a TorchSharp module.", nameof(encoder));
        WriteConfig(folder, encoder.Config, dtype);
        StateDict.Save(module, Path.Combine(folder, WeightsFile), dtype);
        WriteProcessor(folder, processor);
    }

    /// <summary>config.json for a <see cref="ClipVisionConfig"/> (as HF CLIPVisionModel) or a <see cref="QwenVisionConfig"/>.</summary>
    public static void WriteConfig(string folder, object config, ScalarType dtype)
    {
        Directory.CreateDirectory(folder);
        JsonObject json;
        switch (config)
        {
            case ClipVisionConfig clip:
                json = (JsonObject)JsonSerializer.SerializeToNode(clip)!;
                json["model_type"] = "clip_vision_model";
                json["architectures"] = new JsonArray("CLIPVisionModel");
                break;
            case QwenVisionConfig qwen:
                json = (JsonObject)JsonSerializer.SerializeToNode(qwen)!;
                json["model_type"] = QwenModelType;
                json["architectures"] = new JsonArray(nameof(QwenVisionTransformer));
                break;
            default:
                throw new ArgumentException($"Unknown vision config type {config.GetType().Name}.", nameof(config));
        }
        json["torch_dtype"] = dtype switch
        {
            ScalarType.BFloat16 => "bfloat16",
            ScalarType.Float16 => "float16",
            ScalarType.Float32 => "float32",
            _ => throw new ArgumentException($"Vision weights are stored as float32, bfloat16 or float16, not {dtype}.", nameof(dtype)),
        };
        File.WriteAllText(Path.Combine(folder, ConfigFile), json.ToJsonString(Indented) + "\n");
    }

    public static void WriteProcessor(string folder, ImageProcessorConfig processor)
    {
        Directory.CreateDirectory(folder);
        var json = (JsonObject)JsonSerializer.SerializeToNode(processor)!;
        json["image_processor_type"] = "CLIPImageProcessor";
        File.WriteAllText(Path.Combine(folder, PreprocessorFile), json.ToJsonString(Indented) + "\n");
    }

    /// <summary>
    /// The folder's preprocessor_config.json, or when it has none, CLIP's preprocessing at the encoder's size
    /// (shortest edge then center crop to <paramref name="imageSize"/>, OpenAI mean/std), which is what all presets use.
    /// </summary>
    internal static ImageProcessorConfig LoadProcessor(string folder, int imageSize)
    {
        var path = Path.Combine(folder, PreprocessorFile);
        if (!File.Exists(path)) return ProcessorFor(imageSize);
        var processor = ImageProcessorConfig.FromFile(path);
        CheckProcessor(processor, imageSize, $"'{path}'");
        return processor;
    }

    /// <summary>CLIP preprocessing to a square of <paramref name="imageSize"/>: Clip224, Clip336, QwenVL448 or the same recipe at another size.</summary>
    public static ImageProcessorConfig ProcessorFor(int imageSize) => ImageProcessorConfig.ForImageSize(imageSize);

    private static void CheckProcessor(ImageProcessorConfig processor, int imageSize, string source)
    {
        processor.Validate(source);
        if (!processor.DoCenterCrop)
            return;
        var (height, width) = processor.CropOutputSize();
        if (height != imageSize || width != imageSize)
        {
            throw new InvalidDataException(
                $"{source} crops to {height}x{width} but the encoder takes {imageSize}x{imageSize} images; fix crop_size to {imageSize}.");
        }
    }

    /// <summary>
    /// Compares the checkpoint with the tensor list the config implies before the module exists, so a config that does
    /// not fit its weights (e.g. a full-size config beside small weights) fails at once instead of after allocating
    /// gigabytes. <see cref="StateDict.Load"/> repeats the check against the real module.
    /// </summary>
    private static void CheckBeforeBuilding(string folder, ITensorSource source, IReadOnlyList<VisionTensorSpec> specs, LoadOptions options)
    {
        var problems = new List<string>();
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var spec in specs)
        {
            var name = options.MapName?.Invoke(spec.Name) ?? spec.Name;
            used.Add(name);
            if (!source.Contains(name))
                problems.Add($"'{name}' is missing (expected {DTypes.FormatShape(spec.Shape)})");
            else if (source.Describe(name).Shape is var shape && !shape.SequenceEqual(spec.Shape))
                problems.Add($"'{name}' has shape {DTypes.FormatShape(shape)} but the config needs {DTypes.FormatShape(spec.Shape)}");
        }
        problems.AddRange(source.Entries.Select(e => e.Name)
            .Where(name => !used.Contains(name) && !(options.IgnoreUnexpectedWhere?.Invoke(name) ?? false))
            .Select(name => $"'{name}' is unexpected"));
        if (problems.Count == 0) return;
        const int shown = 20;
        throw new InvalidDataException(
            $"Vision checkpoint in '{folder}' does not match its {ConfigFile} ({problems.Count} problem(s)): {string.Join("; ", problems.Take(shown))}" +
            (problems.Count > shown ? $"; … and {problems.Count - shown} more." : ".") +
            " Use the config.json that came with these weights.");
    }

    private static LoadReport LoadInto(nn.Module module, ITensorSource source, LoadOptions options)
    {
        // The module was just built with random weights; every one of them is overwritten (strict), in fp32.
        var report = StateDict.Load(module, source, options);
        module.eval();
        return report;
    }

    private static T ParseConfig<T>(string path, Func<T> parse)
    {
        try
        {
            return parse();
        }
        catch (Exception e) when (e is JsonException or InvalidDataException)
        {
            throw new InvalidDataException($"Vision config '{path}' cannot be used for its checkpoint: {e.Message}", e);
        }
    }

    private static bool HasObject(string json, string property)
    {
        using var document = JsonDocument.Parse(json);
        return document.RootElement.ValueKind == JsonValueKind.Object
               && document.RootElement.TryGetProperty(property, out var value) && value.ValueKind == JsonValueKind.Object;
    }
}
