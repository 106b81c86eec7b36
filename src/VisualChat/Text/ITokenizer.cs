namespace VisualChat.Text;

/// <summary>Text ↔ token ids, as the language model sees them.</summary>
public interface ITokenizer
{
    int VocabSize { get; }
    int BosId { get; }
    int EosId { get; }
    /// <summary>-1 when the vocabulary has no padding token.</summary>
    int PadId { get; }

    /// <summary>Encodes <paramref name="text"/> the way SentencePiece does (a leading space is added to the text).
    /// Added tokens (e.g. <c>&lt;image&gt;</c>) found in the text become their own ids.</summary>
    IReadOnlyList<int> Encode(string text, bool addBos = false, bool addEos = false);

    /// <summary>Decodes ids to text; special tokens (BOS/EOS/PAD) are dropped unless asked for.</summary>
    string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true);

    /// <summary>The id of an added or ordinary token, or null when the vocabulary lacks it.</summary>
    int? TokenToId(string token);
}
