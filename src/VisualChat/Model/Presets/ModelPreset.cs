using static TorchSharp.torch;

namespace VisualChat.Model.Presets;

/// <summary>What a preset builds.</summary>
public enum ModelPresetKind { LanguageModel, VisionEncoder, VisualChatModel }

/// <summary>How <see cref="IModelPreset.Write"/> fills a folder.</summary>
public sealed record PresetWriteOptions
{
    /// <summary>Storage dtype of the weights; null = the preset's default.</summary>
    public ScalarType? DType { get; init; }
    public long Seed { get; init; }
    /// <summary>A tokenizer file or folder to copy into the output (presets without a built-in tokenizer).</summary>
    public string? TokenizerPath { get; init; }
    public long MaxShardBytes { get; init; } = LlamaForCausalLM.DefaultMaxShardBytes;
    /// <summary>Progress and notes ("the folder has no tokenizer"); null = silent.</summary>
    public TextWriter? Log { get; init; }
}

/// <summary>One weight tensor of a preset.</summary>
public sealed record PresetTensor(string Name, long[] Shape)
{
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>A preset's size, computed from its config without allocating any weights.</summary>
public sealed record PresetDescription(string Name, ModelPresetKind Kind, string Summary, long ParameterCount, IReadOnlyList<PresetTensor> Tensors,
    IReadOnlyList<string> Notes)
{
    public long Bytes(ScalarType dtype) => ParameterCount * LlamaConfig.BytesPerElement(DevicePolicy.DTypeName(dtype));

    /// <summary>Human-readable: parameters, bytes per dtype, then the distinct layer shapes (repeated layers shown once).</summary>
    public string Format()
    {
        var lines = new List<string> {
            $"preset {Name} ({Kind}): {Summary}",
            FormattableString.Invariant($"parameters: {ParameterCount:N0} ({ParameterCount / 1e9:F3} B)"),
            $"bytes: float32 {FormatBytes(Bytes(ScalarType.Float32))}, bfloat16/float16 {FormatBytes(Bytes(ScalarType.BFloat16))}",
        };
        lines.AddRange(Notes);
        lines.Add($"tensors ({Tensors.Count}):");
        // Layers repeat; show layer 0 in full and count the rest.
        var layerPattern = new System.Text.RegularExpressions.Regex(@"\.layers\.(\d+)\.");
        int layers = Tensors.Select(t => layerPattern.Match(t.Name)).Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value)).DefaultIfEmpty(-1).Max() + 1;
        foreach (var tensor in Tensors) {
            var match = layerPattern.Match(tensor.Name);
            if (match.Success && match.Groups[1].Value != "0") continue;
            string name = match.Success ? layerPattern.Replace(tensor.Name, ".layers.{0.." + (layers - 1) + "}.") : tensor.Name;
            lines.Add($"  {name,-60} [{string.Join(", ", tensor.Shape)}]{(match.Success && layers > 1 ? $" ×{layers}" : "")}");
        }
        return string.Join(Environment.NewLine, lines);
    }

    public static string FormatBytes(long bytes) => bytes >= 1L << 30 ? FormattableString.Invariant($"{bytes / (double)(1L << 30):F2} GiB ({bytes:N0} B)")
        : bytes >= 1L << 20 ? FormattableString.Invariant($"{bytes / (double)(1L << 20):F1} MiB ({bytes:N0} B)") : FormattableString.Invariant($"{bytes:N0} B");
}

/// <summary>What a write produced.</summary>
public sealed record PresetWriteResult(string Folder, IReadOnlyList<string> Files, long WeightBytes, bool HasTokenizer);

/// <summary>A named model recipe: its shapes (without allocating) and a writer of a randomly initialised model folder.</summary>
public interface IModelPreset
{
    string Name { get; }
    ModelPresetKind Kind { get; }
    string Summary { get; }
    PresetDescription Describe();
    PresetWriteResult Write(string folder, PresetWriteOptions options);
}
