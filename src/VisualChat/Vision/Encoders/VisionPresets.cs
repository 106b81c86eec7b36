using System.Globalization;
using TorchSharp;
using VisualChat.Vision.Imaging;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>Architecture family of a vision preset.</summary>
public enum VisionEncoderFamily
{
    Clip,
    Qwen,
}

/// <summary>
/// What a preset is, computed from its config alone (nothing allocated): output tokens and width, parameter count and
/// the list of tensors its folder holds.
/// </summary>
public sealed record VisionPresetInfo(string Name, string Title, VisionEncoderFamily Family, object Config,
    ImageProcessorConfig Processor, VisionOutputDescription Output, IReadOnlyList<VisionTensorSpec> Tensors)
{
    public long Parameters => VisionTensorLayout.ParameterCount(Tensors);

    public long Bytes(ScalarType dtype) => Tensors.Sum(s => s.Elements * DTypes.ElementSize(dtype));

    public ClipVisionConfig ClipConfig => Config as ClipVisionConfig
        ?? throw new InvalidOperationException($"Vision preset '{Name}' is a {Family} encoder, not CLIP.");

    public QwenVisionConfig QwenConfig => Config as QwenVisionConfig
        ?? throw new InvalidOperationException($"Vision preset '{Name}' is a {Family} encoder, not Qwen-VL.");
}

/// <summary>
/// Named vision encoders: <c>tiny</c> and <c>qwen-tiny</c> (unit-test sizes), <c>clip-vit-large-patch14</c>,
/// <c>clip-vit-large-patch14-336</c> (openai CLIP ViT-L/14) and <c>qwen-vl-448</c> (DeepSpeed-VisualChat's Qwen-VL
/// encoder, ~1.9B parameters). Each can be described without allocating, built in memory with HF-style random weights,
/// or written as a loadable folder tensor by tensor (<see cref="VisionEncoderFolder.Load"/> reads it back strictly).
/// </summary>
public static class VisionPresets
{
    /// <summary>Free space kept beyond the files' size when checking the disk before writing.</summary>
    private const long DiskMarginBytes = 64L << 20;

    public static IReadOnlyList<string> Names { get; } =
        ["tiny", "qwen-tiny", "clip-vit-large-patch14", "clip-vit-large-patch14-336", "qwen-vl-448"];

    public static VisionPresetInfo Info(string name)
    {
        var key = Normalize(name);
        return key switch
        {
            "tiny" => Clip(key, "tiny CLIP vision tower for tests", ClipVisionConfig.Tiny()),
            "clip-vit-large-patch14" => Clip(key, "openai/clip-vit-large-patch14 vision tower (CLIPVisionModel)", ClipVisionConfig.ClipVitLargePatch14()),
            "clip-vit-large-patch14-336" => Clip(key, "openai/clip-vit-large-patch14-336 vision tower (CLIPVisionModel)", ClipVisionConfig.ClipVitLargePatch14_336()),
            "qwen-tiny" => Qwen(key, "tiny Qwen-VL visual encoder for tests", QwenVisionConfig.Tiny()),
            "qwen-vl-448" => Qwen(key, "Qwen-VL visual encoder as DeepSpeed-VisualChat extracts it (qwen_clip)", QwenVisionConfig.DeepSpeedVisualChat()),
            _ => throw new ArgumentException($"Unknown vision preset '{name}'. Known presets: {string.Join(", ", Names)}.", nameof(name)),
        };
    }

    /// <summary>One paragraph: image size, tokens × width, layers, parameters and bytes in fp32/bf16.</summary>
    public static string Describe(string name)
    {
        var info = Info(name);
        var (layers, width) = info.Config switch
        {
            ClipVisionConfig clip => (clip.NumHiddenLayers, clip.HiddenSize),
            QwenVisionConfig qwen => (qwen.Layers, qwen.Width),
            _ => (0, 0),
        };
        var inv = CultureInfo.InvariantCulture;
        return string.Create(inv,
            $"{info.Name}: {info.Title}; {info.Output.ImageSize}x{info.Output.ImageSize} px, {info.Output.PatchGrid}x{info.Output.PatchGrid} patches, " +
            $"{layers} layers of width {width} → {info.Output.OutputTokens} tokens x {info.Output.OutputWidth}; " +
            $"{info.Parameters:N0} parameters, {FormatBytes(info.Bytes(ScalarType.Float32))} fp32 / {FormatBytes(info.Bytes(ScalarType.BFloat16))} bf16.");
    }

    /// <summary>Builds the preset in memory (fp32, CPU, frozen) with the same random weights <see cref="Write"/> stores for this seed.</summary>
    public static IVisionEncoder Create(string name, int seed = 0)
    {
        var info = Info(name);
        nn.Module module = info.Family == VisionEncoderFamily.Clip
            ? new ClipVisionModel(info.ClipConfig)
            : new QwenVisionTransformer(info.QwenConfig);
        VisionWeightInit.Initialize(module, seed);
        return (IVisionEncoder)module;
    }

    /// <summary>
    /// Writes a loadable folder (config.json, model.safetensors, preprocessor_config.json) with random weights, generating
    /// and writing one tensor at a time so even qwen-vl-448 needs memory for its largest tensor only. Refuses before
    /// writing anything when the disk under <paramref name="folder"/> lacks the space.
    /// </summary>
    public static VisionPresetInfo Write(string name, string folder, ScalarType dtype = ScalarType.Float32, int seed = 0)
    {
        var info = Info(name);
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"Vision weights are written as float32, bfloat16 or float16, not {dtype}.", nameof(dtype));
        CheckDiskSpace(folder, info.Bytes(dtype) + DiskMarginBytes, info.Name, dtype);
        Directory.CreateDirectory(folder);
        VisionEncoderFolder.WriteConfig(folder, info.Config, dtype);
        VisionEncoderFolder.WriteProcessor(folder, info.Processor);
        using var generator = new Generator((ulong)seed);
        // One file (vision folders are never sharded), each tensor generated when its bytes are due.
        TensorFiles.SaveShardedStreaming(folder, info.Tensors.Select(t => (t.Name, t.Shape)).ToList(), dtype,
            (name, shape) => VisionWeightInit.Generate(name, shape, generator), long.MaxValue, Path.GetFileNameWithoutExtension(VisionEncoderFolder.WeightsFile),
            new Dictionary<string, string> { ["format"] = "pt" });
        return info;
    }

    private static void CheckDiskSpace(string folder, long needed, string name, ScalarType dtype)
    {
        var existing = new DirectoryInfo(Path.GetFullPath(folder));
        while (existing is not null && !existing.Exists) existing = existing.Parent;
        if (existing is null) return;
        long available;
        try
        {
            available = new DriveInfo(existing.FullName).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            return; // No way to ask; the write itself reports a full disk.
        }
        EnsureFits(name, dtype, needed, available, existing.FullName);
    }

    /// <summary>Throws <see cref="IOException"/> naming the preset, the place and both sizes when <paramref name="neededBytes"/> exceed <paramref name="availableBytes"/>.</summary>
    public static void EnsureFits(string name, ScalarType dtype, long neededBytes, long availableBytes, string where)
    {
        if (availableBytes < neededBytes)
        {
            throw new IOException(
                $"Writing vision preset '{name}' as {dtype} needs about {FormatBytes(neededBytes)} under '{where}', " +
                $"but only {FormatBytes(availableBytes)} are free; choose a folder on a larger disk or a 2-byte dtype (bf16).");
        }
    }

    private static string Normalize(string name)
    {
        var key = name.Trim().ToLowerInvariant();
        return key.StartsWith("openai/", StringComparison.Ordinal) ? key["openai/".Length..] : key;
    }

    private static VisionPresetInfo Clip(string name, string title, ClipVisionConfig config) =>
        new(name, title, VisionEncoderFamily.Clip, config, VisionEncoderFolder.ProcessorFor(config.ImageSize),
            ClipVisionModel.DescribeOutput(config), VisionTensorLayout.Clip(config));

    private static VisionPresetInfo Qwen(string name, string title, QwenVisionConfig config) =>
        new(name, title, VisionEncoderFamily.Qwen, config, VisionEncoderFolder.ProcessorFor(config.ImageSize),
            QwenVisionTransformer.DescribeOutput(config), VisionTensorLayout.Qwen(config));

    internal static string FormatBytes(long bytes) => bytes switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F2} GiB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):F1} MiB"),
        >= 1L << 10 => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:F1} KiB"),
        _ => $"{bytes} B",
    };
}
