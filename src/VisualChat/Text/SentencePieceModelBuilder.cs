namespace VisualChat.Text;

/// <summary>
/// Builds small LLaMA-style SentencePiece models (BPE, byte fallback, identity normalizer, dummy prefix) from a
/// vocabulary list, so tiny test models can ship a tokenizer.model that python's sentencepiece loads too.
/// </summary>
public static class SentencePieceModelBuilder
{
    public const int UnkId = 0, BosId = 1, EosId = 2;

    /// <summary>Number of ids in front of the vocabulary: &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt; and the 256 byte pieces.</summary>
    public const int ReservedCount = 3 + 256;

    /// <summary>
    /// Model with ids 0 = &lt;unk&gt;, 1 = &lt;s&gt;, 2 = &lt;/s&gt;, 3..258 = &lt;0x00&gt;..&lt;0xFF&gt;, then
    /// <paramref name="vocabulary"/> in order. A higher score merges first; characters absent from the vocabulary fall
    /// back to their UTF-8 bytes. Whitespace is spelled "▁" in pieces, as in LLaMA.
    /// </summary>
    public static SentencePieceModel CreateByteFallbackBpe(IEnumerable<(string Piece, float Score)> vocabulary)
    {
        var pieces = new List<SentencePieceEntry>
        {
            new("<unk>", 0f, SentencePieceType.Unknown),
            new("<s>", 0f, SentencePieceType.Control),
            new("</s>", 0f, SentencePieceType.Control),
        };
        for (int b = 0; b < 256; b++) pieces.Add(new SentencePieceEntry(SentencePieceModel.BytePieceName((byte)b), 0f, SentencePieceType.Byte));
        var seen = new HashSet<string>(pieces.Select(p => p.Piece), StringComparer.Ordinal);
        foreach (var (piece, score) in vocabulary)
        {
            if (string.IsNullOrEmpty(piece)) throw new ArgumentException("Vocabulary pieces cannot be empty.", nameof(vocabulary));
            if (!seen.Add(piece)) throw new ArgumentException($"Vocabulary piece '{piece}' is listed twice or clashes with a reserved piece.", nameof(vocabulary));
            if (piece.Contains(' ')) throw new ArgumentException($"Vocabulary piece '{piece}' contains a space; spell whitespace as '▁'.", nameof(vocabulary));
            pieces.Add(new SentencePieceEntry(piece, score));
        }

        var trainer = new SentencePieceTrainerSpec
        {
            ModelType = SentencePieceModelType.Bpe,
            VocabSize = pieces.Count,
            ByteFallback = true,
            UnkId = UnkId,
            BosId = BosId,
            EosId = EosId,
            PadId = -1,
        };
        var normalizer = new SentencePieceNormalizerSpec
        {
            Name = "identity",
            AddDummyPrefix = true,
            RemoveExtraWhitespaces = false,
            EscapeWhitespaces = true,
        };
        return new SentencePieceModel(pieces, trainer, normalizer);
    }

    /// <summary>Same, with pieces given in merge priority order (first = merged first; score = -index).</summary>
    public static SentencePieceModel CreateByteFallbackBpe(IEnumerable<string> piecesByPriority) =>
        CreateByteFallbackBpe(piecesByPriority.Select((piece, index) => (piece, -(float)index)));
}
