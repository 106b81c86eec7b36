namespace VisualChat.Model.Presets;

/// <summary>
/// Every named preset. Add a preset by adding one entry to <see cref="Presets"/> (vision encoders and complete
/// VisualChat models implement <see cref="IModelPreset"/> with their own <see cref="ModelPresetKind"/>).
/// </summary>
public static class ModelPresetCatalog
{
    static readonly IModelPreset[] Presets =
    [
        LanguageModelPresets.Tiny,
        LanguageModelPresets.Llama100M,
        LanguageModelPresets.TinyLlama11B,
        LanguageModelPresets.Llama2_7B,
        LanguageModelPresets.Llama2_13B,
        LanguageModelPresets.Llama2_70B,
    ];

    public static IReadOnlyList<IModelPreset> All => Presets;

    public static IEnumerable<IModelPreset> OfKind(ModelPresetKind kind) => Presets.Where(p => p.Kind == kind);

    /// <summary>The preset called <paramref name="name"/> (case-insensitive); the error lists the known names.</summary>
    public static IModelPreset Get(string name) =>
        Presets.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"Unknown preset '{name}'. Known presets: {string.Join(", ", Presets.Select(p => p.Name))}.", nameof(name));
}
