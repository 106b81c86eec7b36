using VisualChat.Model;

namespace VisualChat.Inference.Generation;

/// <summary>
/// A sequence to decode: its state (a single sequence, from <see cref="ICausalDecoder.CreateState"/> or a model's own
/// factory), the prompt to prefill into it (null: the state already holds its prompt and next-token logits), and how
/// to decode.
/// </summary>
public sealed record GenerationRequest(DecoderState State, DecoderPrompt? Prompt, GenerationOptions Options)
{
    /// <summary>Receives each generated id (the ending EOS / stop-string token included).</summary>
    public Action<int>? OnToken { get; init; }
    /// <summary>Receives the text as it becomes final (UTF-8 complete, not a possible stop-string start); needs a decoder of ids.</summary>
    public Action<string>? OnText { get; init; }
    /// <summary>Ends the sequence (finish reason Cancelled) before its next token.</summary>
    public CancellationToken CancellationToken { get; init; }
    /// <summary>Feed the token that ended the sequence into the state too, so a next round (chat) continues after it.</summary>
    public bool KeepFinalToken { get; init; }
    /// <summary>Ids before the generated ones whose text is context for the first token's leading space (e.g. the
    /// prompt for a continuation); null: the text starts as the answer decoded alone.</summary>
    public IReadOnlyList<int>? TextContext { get; init; }
}
