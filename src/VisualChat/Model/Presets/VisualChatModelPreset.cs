namespace VisualChat.Model.Presets;

/// <summary>A complete VisualChat model preset of <see cref="VisualChatPresets"/> in the common preset catalog: <c>tiny</c>
/// is written with random weights; the paper's shapes are described only.</summary>
public sealed class VisualChatModelPreset(string name) : IModelPreset
{
    public string Name { get; } = name;
    public ModelPresetKind Kind => ModelPresetKind.VisualChatModel;
    public string Summary => VisualChatPresets.Describe(Name).Summary;

    public PresetDescription Describe()
    {
        var d = VisualChatPresets.Describe(Name);
        return new PresetDescription(Name, Kind, d.Summary, d.TotalParameters, [],
        [
            FormattableString.Invariant($"vision encoder {d.VisionParameters:N0}, projection {d.ProjectionParameters:N0}, language model {d.LanguageModelParameters:N0} parameters"),
            FormattableString.Invariant($"trainable by default (projection + token embeddings): {d.TrainableParameters:N0}"),
            $"image tokens per image: {d.ImageTokens}",
        ]);
    }

    public PresetWriteResult Write(string folder, PresetWriteOptions options)
    {
        if (Name != VisualChatPresets.Tiny)
        {
            throw new InvalidOperationException(
                $"Preset '{Name}' describes DeepSpeed-VisualChat's shapes only (use --describe); build such a model from real checkpoints " +
                $"(a LLaMA folder and a vision encoder folder). Writable complete-model preset: {VisualChatPresets.Tiny}.");
        }

        using var model = VisualChatPresets.Create(Name, options.Seed);
        model.Save(folder);
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(folder, f)).Order().ToList();
        long bytes = files.Where(f => f.EndsWith(".safetensors", StringComparison.Ordinal)).Sum(f => new FileInfo(Path.Combine(folder, f)).Length);
        return new PresetWriteResult(folder, files, bytes, HasTokenizer: model.Tokenizer is not null);
    }
}
