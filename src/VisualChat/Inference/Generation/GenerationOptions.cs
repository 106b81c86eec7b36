namespace VisualChat.Inference.Generation;

/// <summary>Decoding settings, with HF generate() semantics.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 128;
    /// <summary>0 = greedy (argmax); otherwise logits are divided by it before sampling.</summary>
    public double Temperature { get; init; } = 0;
    /// <summary>Keep only the k most likely tokens; 0 = off.</summary>
    public int TopK { get; init; }
    /// <summary>Nucleus sampling: keep the smallest set of tokens whose probability reaches p; 1 = off.</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>HF: logits of every id seen so far (prompt included) are divided by it when positive, multiplied when negative; 1 = off.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    /// <summary>Generation ends once the decoded continuation contains one of these (also across token boundaries);
    /// the stop string is not part of the text.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = Array.Empty<string>();
    /// <summary>Token ids that end generation (EOS). Null = the model config's eos_token_id.</summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }
    public ulong Seed { get; init; } = 42;

    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), $"GenerationOptions.MaxNewTokens must be ≥ 0 (got {MaxNewTokens}).");
        if (Temperature < 0 || double.IsNaN(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), $"GenerationOptions.Temperature must be ≥ 0 (got {Temperature}); 0 means greedy.");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), $"GenerationOptions.TopK must be ≥ 0 (got {TopK}); 0 turns it off.");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), $"GenerationOptions.TopP must be in (0, 1] (got {TopP}).");
        if (!(RepetitionPenalty > 0)) throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), $"GenerationOptions.RepetitionPenalty must be > 0 (got {RepetitionPenalty}); 1 turns it off.");
        if (StopStrings.Any(string.IsNullOrEmpty)) throw new ArgumentException("GenerationOptions.StopStrings must not contain empty strings.", nameof(StopStrings));
    }
}

public enum FinishReason { Length, EndOfSequence, StopString, Cancelled }

/// <param name="TokenIds">The generated ids (prompt excluded), including the EOS / stop-string token that ended it.</param>
/// <param name="StopString">The stop string found, when <see cref="FinishReason.StopString"/>.</param>
/// <param name="Text">The generated text without stop tokens, the stop string and what followed it; null when the
/// engine had no way to decode ids.</param>
public sealed record GenerationResult(IReadOnlyList<int> TokenIds, FinishReason FinishReason, string? StopString = null, string? Text = null);
