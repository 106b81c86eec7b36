namespace VisualChat.Inference.Generation;

/// <summary>
/// Turns ids arriving one by one into text deltas, decoding only a short window per token: the text of
/// ids[prefix..] minus the text of ids[prefix..read] (the window starts one emitted token back, so SentencePiece's
/// leading-space rule and byte-fallback pieces decode as they do in context). While the window ends in U+FFFD — the
/// bytes of a character not all there yet — nothing is emitted and the window grows until the character completes,
/// so a delta never splits a multi-byte character. Concatenated deltas equal decoding all ids (after
/// <see cref="Flush"/>).
/// </summary>
public sealed class IncrementalDetokenizer
{
    /// <summary>Ids of context (e.g. the prompt's tail) decoded in front of the first token, so it gets its leading space.</summary>
    public const int ContextTokens = 5;

    readonly Func<IReadOnlyList<int>, string> decode;
    readonly List<int> ids = [];
    int prefixOffset, readOffset;

    /// <param name="decode">Ids → text (e.g. <c>ids => tokenizer.Decode(ids)</c>).</param>
    /// <param name="context">Ids before the first token (their text is never emitted); null or empty: none, the first
    /// token's leading space is dropped as when decoding the answer alone.</param>
    public IncrementalDetokenizer(Func<IReadOnlyList<int>, string> decode, IReadOnlyList<int>? context = null)
    {
        this.decode = decode;
        if (context is { Count: > 0 }) {
            ids.AddRange(context.Skip(Math.Max(0, context.Count - ContextTokens)));
            readOffset = ids.Count;
        }
    }

    /// <summary>Appends <paramref name="token"/> and returns the text that became final ("" while a character is incomplete).</summary>
    public string Add(int token)
    {
        ids.Add(token);
        var prefix = readOffset > prefixOffset ? decode(Window(prefixOffset, readOffset)) : "";
        var text = decode(Window(prefixOffset, ids.Count));
        if (text.Length <= prefix.Length || text[^1] == '\uFFFD') return "";
        prefixOffset = readOffset;
        readOffset = ids.Count;
        return text[prefix.Length..];
    }

    /// <summary>Whatever is held back (an incomplete character at the very end), as decoding gives it.</summary>
    public string Flush()
    {
        if (readOffset == ids.Count) return "";
        var prefix = readOffset > prefixOffset ? decode(Window(prefixOffset, readOffset)) : "";
        var text = decode(Window(prefixOffset, ids.Count));
        prefixOffset = readOffset;
        readOffset = ids.Count;
        return text.Length > prefix.Length ? text[prefix.Length..] : "";
    }

    List<int> Window(int from, int to) => ids.GetRange(from, to - from);
}
