using System.Text.RegularExpressions;
using TorchSharp.Modules;

namespace VisualChat.Training;

/// <summary>Which parameters train, and in which AdamW group.</summary>
public static class ParameterSelection
{
    /// <summary>Glob (<c>*</c>, <c>?</c>) over the full dotted name; a pattern starting with <c>re:</c> is a regex;
    /// with <paramref name="substring"/>, a pattern without wildcards also matches as a substring.</summary>
    public static bool MatchesAny(string name, IEnumerable<string> patterns, bool substring = false)
    {
        foreach (var pattern in patterns)
        {
            if (pattern.StartsWith("re:", StringComparison.Ordinal)) { if (Regex.IsMatch(name, pattern[3..])) return true; continue; }
            bool wildcard = pattern.Contains('*') || pattern.Contains('?');
            if (!wildcard && substring && name.Contains(pattern, StringComparison.Ordinal)) return true;
            var regex = "^" + Regex.Escape(pattern).Replace(@"\*", ".*").Replace(@"\?", ".") + "$";
            if (Regex.IsMatch(name, regex)) return true;
        }
        return false;
    }

    public static bool IsLoraParameter(string name) => name.EndsWith(".lora_A", StringComparison.Ordinal) || name.EndsWith(".lora_B", StringComparison.Ordinal);

    /// <summary>No weight decay for biases, norm weights (name contains "norm") and any 1-D tensor — DSVC's rule
    /// (no_decay_name_list = bias, LayerNorm.weight) generalised to RMSNorm and to shapes.</summary>
    public static bool IsNoDecay(string name, Parameter parameter) =>
        name.EndsWith(".bias", StringComparison.Ordinal) || name == "bias"
        || name.Contains("norm", StringComparison.OrdinalIgnoreCase) || parameter.dim() <= 1;

    /// <summary>The trainable decision: LoRA tensors always; with only_optimize_lora nothing else; otherwise what the
    /// model declares plus the unfreeze patterns.</summary>
    public static bool IsTrainable(string name, TrainingConfig config, Func<string, bool> declared)
    {
        if (IsLoraParameter(name)) return true;
        if (config.OnlyOptimizeLora) return false;
        if (config.LoraDim > 0 && name.Contains(".base_layer.", StringComparison.Ordinal)) return MatchesAny(name, config.Unfreeze);
        return declared(name) || MatchesAny(name, config.Unfreeze);
    }
}
