using VisualChat.Vision;
using VisualChat.Vision.Encoders;

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
        .. VisionPresets.Names.Select(n => (IModelPreset)new VisionEncoderPreset(n)),
        .. VisualChatPresets.Names.Select(n => (IModelPreset)new VisualChatModelPreset(n)),
    ];

    public static IReadOnlyList<IModelPreset> All => Presets;

    public static IEnumerable<IModelPreset> OfKind(ModelPresetKind kind) => Presets.Where(p => p.Kind == kind);

    /// <summary>
    /// The preset called <paramref name="name"/> (case-insensitive) of the given kind. Without a kind, a name used by
    /// several kinds (<c>tiny</c>) resolves in the order language model, VisualChat model, vision encoder. The error
    /// lists the known names.
    /// </summary>
    public static IModelPreset Get(string name, ModelPresetKind? kind = null) =>
        Presets.Where(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase) && (kind is null || p.Kind == kind))
            .OrderBy(p => p.Kind switch { ModelPresetKind.LanguageModel => 0, ModelPresetKind.VisualChatModel => 1, _ => 2 })
            .FirstOrDefault()
        ?? throw new ArgumentException($"Unknown {(kind is null ? "" : KindName(kind.Value) + " ")}preset '{name}'. Known presets: " +
                                       string.Join(", ", Presets.Where(p => kind is null || p.Kind == kind).Select(p => $"{p.Name} ({KindName(p.Kind)})")) + ".", nameof(name));

    /// <summary>The command-line spelling of a kind: lm, vision, visualchat.</summary>
    public static string KindName(ModelPresetKind kind) => kind switch
    {
        ModelPresetKind.LanguageModel => "lm",
        ModelPresetKind.VisionEncoder => "vision",
        _ => "visualchat",
    };

    public static ModelPresetKind ParseKind(string name) => name.ToLowerInvariant() switch
    {
        "lm" or "language-model" => ModelPresetKind.LanguageModel,
        "vision" or "vision-encoder" => ModelPresetKind.VisionEncoder,
        "visualchat" or "model" => ModelPresetKind.VisualChatModel,
        _ => throw new ArgumentException($"Unknown preset kind '{name}'; use lm, vision or visualchat.", nameof(name)),
    };
}
