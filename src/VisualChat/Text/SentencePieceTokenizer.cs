using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VisualChat.Text;

/// <summary>A token matched literally in the text before BPE runs (e.g. <c>&lt;image&gt;</c>).</summary>
public sealed record AddedToken(string Content, int Id, bool Special);

/// <summary>
/// The LLaMA tokenizer: SentencePiece BPE with byte fallback, id-for-id equal to SentencePiece, loaded from a
/// <c>tokenizer.model</c> (<see cref="FromFile"/>) or from a HuggingFace <c>tokenizer.json</c>
/// (<see cref="HuggingFaceTokenizerJson"/>), plus HF-style added tokens.
/// </summary>
public sealed class SentencePieceTokenizer : ITokenizer
{
    private const char SpaceSymbol = '\u2581'; // "▁"

    private readonly IPieceEncoder _encoder;
    private readonly string[] _pieces;
    private readonly SentencePieceType[] _types;
    private readonly Dictionary<string, int> _pieceToId;
    private readonly bool _addDummyPrefix;
    private readonly bool _removeExtraWhitespaces;
    private readonly bool _escapeWhitespaces;
    private readonly List<AddedToken> _addedTokens = new();
    private readonly Dictionary<int, AddedToken> _addedById = new();
    private readonly Dictionary<string, AddedToken> _addedByContent = new(StringComparer.Ordinal);
    private readonly SentencePieceModel? _model;
    private readonly string? _tokenizerJson;

    internal SentencePieceTokenizer(IPieceEncoder encoder, string[] pieces, SentencePieceType[] types, int bosId, int eosId, int padId,
        bool addDummyPrefix, bool removeExtraWhitespaces, bool escapeWhitespaces, SentencePieceModel? model, string? tokenizerJson)
    {
        _encoder = encoder;
        _pieces = pieces;
        _types = types;
        _pieceToId = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int id = 0; id < pieces.Length; id++) _pieceToId.TryAdd(pieces[id], id);
        BosId = bosId;
        EosId = eosId;
        PadId = padId;
        _addDummyPrefix = addDummyPrefix;
        _removeExtraWhitespaces = removeExtraWhitespaces;
        _escapeWhitespaces = escapeWhitespaces;
        _model = model;
        _tokenizerJson = tokenizerJson;
    }

    /// <summary>Loads <c>tokenizer.model</c> (SentencePiece protobuf) or <c>tokenizer.json</c> (HuggingFace), by extension.
    /// Added tokens in neighbouring files are not read here; <see cref="TokenizerFactory.FromFolder"/> does that.</summary>
    public static SentencePieceTokenizer FromFile(string path)
    {
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return HuggingFaceTokenizerJson.Load(path);
        return FromModel(SentencePieceModel.Load(path), path);
    }

    public static SentencePieceTokenizer FromModel(SentencePieceModel model, string source = "SentencePiece model")
    {
        var trainer = model.TrainerSpec;
        var normalizer = model.NormalizerSpec;
        if (trainer.ModelType != SentencePieceModelType.Bpe)
            throw new NotSupportedException($"{source}: model_type is {trainer.ModelType}; only BPE SentencePiece models (LLaMA) are supported.");
        if (normalizer.PrecompiledCharsMapLength > 0)
            throw new NotSupportedException($"{source}: normalizer '{normalizer.Name}' carries a precompiled character map; only the identity normalizer (LLaMA) is supported.");
        if (trainer.TreatWhitespaceAsSuffix)
            throw new NotSupportedException($"{source}: treat_whitespace_as_suffix is set; only prefix whitespace (LLaMA) is supported.");
        var encoder = new SentencePieceBpeEncoder(model, source);
        return new SentencePieceTokenizer(encoder, model.Pieces.Select(p => p.Piece).ToArray(), model.Pieces.Select(p => p.Type).ToArray(),
            trainer.BosId, trainer.EosId, trainer.PadId, normalizer.AddDummyPrefix, normalizer.RemoveExtraWhitespaces, normalizer.EscapeWhitespaces, model, null);
    }

    /// <summary>Size of the vocabulary the model file defines, without added tokens.</summary>
    public int BaseVocabSize => _pieces.Length;
    public int VocabSize => _pieces.Length + _addedTokens.Count(t => t.Id >= _pieces.Length);
    public int BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public IReadOnlyList<AddedToken> AddedTokens => _addedTokens;

    /// <summary>
    /// How text after an added token is encoded. True (HF LlamaTokenizer with <c>legacy=True</c>, the behaviour
    /// DeepSpeed-VisualChat was trained with): every text segment between added tokens is encoded by SentencePiece on its
    /// own, so each one gets the dummy-prefix "▁" — "&lt;image&gt;\n" gives <c>&lt;image&gt; ▁ &lt;0x0A&gt;</c>
    /// (29871 13). False (<c>legacy=False</c>): only a segment at the very start of the text gets the dummy prefix.
    /// Added tokens never strip the whitespace around them (HF AddedToken lstrip/rstrip = false, the default of current
    /// transformers; releases before 4.34 stripped it around tokens added as plain strings).
    /// The rule was checked with python sentencepiece alone: legacy = <c>sp.encode(segment)</c> per segment; non-legacy =
    /// <c>sp.encode("&lt;unk&gt;" + segment)</c> minus the &lt;unk&gt; pieces, which is how HF's slow LlamaTokenizer
    /// drops the prefix. Deviation: with legacy=False HF emits a lone "▁" before a non-special added token that opens the
    /// text; this class does not.
    /// </summary>
    public bool DummyPrefixOnEverySegment { get; set; } = true;

    public int? TokenToId(string token)
    {
        if (_addedByContent.TryGetValue(token, out var added)) return added.Id;
        return _pieceToId.TryGetValue(token, out int id) ? id : null;
    }

    /// <summary>The vocabulary piece or added token text of <paramref name="id"/>.</summary>
    public string IdToPiece(int id)
    {
        if (_addedById.TryGetValue(id, out var added)) return added.Content;
        if ((uint)id < (uint)_pieces.Length) return _pieces[id];
        throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id {id} is outside the vocabulary (size {VocabSize}).");
    }

    /// <summary>Adds tokens matched literally in text; new ones get ids after the vocabulary, in order. A token the
    /// vocabulary already has keeps its id (it only becomes literal-match). Returns how many new ids were created.</summary>
    public int AddTokens(IEnumerable<string> tokens, bool special = false)
    {
        int created = 0;
        foreach (var token in tokens)
        {
            if (string.IsNullOrEmpty(token)) throw new ArgumentException("An added token cannot be empty.", nameof(tokens));
            if (_addedByContent.ContainsKey(token)) continue;
            if (_pieceToId.TryGetValue(token, out int existing))
            {
                Register(new AddedToken(token, existing, special));
                continue;
            }
            Register(new AddedToken(token, VocabSize, special));
            created++;
        }
        return created;
    }

    /// <summary>Like <see cref="AddTokens"/> for special tokens (dropped by <see cref="Decode"/> when skipping specials).</summary>
    public int AddSpecialTokens(IEnumerable<string> tokens) => AddTokens(tokens, special: true);

    /// <summary>Registers an added token with a fixed id (as stored in added_tokens.json / tokenizer_config.json):
    /// an id inside the vocabulary must name the same piece; a new id must be the next free one.</summary>
    public void AddTokenWithId(string content, int id, bool special, string source)
    {
        if (_addedByContent.TryGetValue(content, out var known))
        {
            if (known.Id != id)
                throw new InvalidDataException($"{source}: added token '{content}' has id {id}, but it already has id {known.Id}.");
            return;
        }
        if (id < _pieces.Length)
        {
            if (_pieces[id] != content)
                throw new InvalidDataException($"{source}: added token '{content}' claims id {id}, which is the vocabulary piece '{_pieces[id]}'.");
        }
        else if (id != VocabSize)
        {
            throw new InvalidDataException($"{source}: added token '{content}' has id {id}, but the next free id is {VocabSize}; added ids must follow the vocabulary without gaps.");
        }

        Register(new AddedToken(content, id, special));
    }

    private void Register(AddedToken token)
    {
        _addedTokens.Add(token);
        _addedById[token.Id] = token;
        _addedByContent[token.Content] = token;
    }

    public IReadOnlyList<int> Encode(string text, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (addBos) ids.Add(BosId);
        int segmentStart = 0;
        int position = _addedTokens.Count == 0 ? text.Length : 0;
        while (position < text.Length)
        {
            var match = MatchAddedToken(text, position);
            if (match is null)
            {
                position++;
                continue;
            }
            EncodeSegment(text, segmentStart, position, ids);
            ids.Add(match.Id);
            position += match.Content.Length;
            segmentStart = position;
        }
        EncodeSegment(text, segmentStart, text.Length, ids);
        if (addEos) ids.Add(EosId);
        return ids;
    }

    /// <summary>Longest added token starting at <paramref name="position"/> (leftmost-longest, like HF's matcher).</summary>
    private AddedToken? MatchAddedToken(string text, int position)
    {
        AddedToken? best = null;
        foreach (var token in _addedTokens)
        {
            if (token.Content.Length > text.Length - position || (best is not null && token.Content.Length <= best.Content.Length)) continue;
            if (string.CompareOrdinal(text, position, token.Content, 0, token.Content.Length) == 0) best = token;
        }
        return best;
    }

    private void EncodeSegment(string text, int start, int end, List<int> ids)
    {
        if (end <= start) return;
        bool dummyPrefix = _addDummyPrefix && (start == 0 || DummyPrefixOnEverySegment);
        _encoder.Encode(Normalize(text.AsSpan(start, end - start), dummyPrefix), ids);
    }

    /// <summary>SentencePiece's normalizer for the identity rule set: optional whitespace squeezing, the dummy-prefix
    /// space, and spaces escaped as "▁".</summary>
    private string Normalize(ReadOnlySpan<char> segment, bool dummyPrefix)
    {
        if (_removeExtraWhitespaces) segment = segment.Trim(' ');
        if (segment.IsEmpty) return "";
        var builder = new StringBuilder(segment.Length + 1);
        if (dummyPrefix) builder.Append(' ');
        for (int i = 0; i < segment.Length; i++)
        {
            if (_removeExtraWhitespaces && segment[i] == ' ' && i > 0 && segment[i - 1] == ' ') continue;
            builder.Append(segment[i]);
        }
        if (_escapeWhitespaces) builder.Replace(' ', SpaceSymbol);
        return builder.ToString();
    }

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var text = new StringBuilder();
        var pendingBytes = new List<byte>();
        // SentencePiece drops the "▁" of the dummy prefix from the first piece that produces text; in legacy mode each
        // segment after an added token had its own dummy prefix, so it is dropped there too (as HF's slow decoder does).
        bool atSegmentStart = true;

        void FlushBytes()
        {
            if (pendingBytes.Count == 0) return;
            text.Append(Encoding.UTF8.GetString(pendingBytes.ToArray()));
            pendingBytes.Clear();
        }

        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var added))
            {
                FlushBytes();
                // The text after an added token was encoded as its own segment even when the token itself is skipped.
                if (DummyPrefixOnEverySegment) atSegmentStart = true;
                else if (!(added.Special && skipSpecialTokens)) atSegmentStart = false;
                if (added.Special && skipSpecialTokens && (id >= _pieces.Length || _types[id] != SentencePieceType.Normal)) continue;
                text.Append(added.Content);
                continue;
            }
            if ((uint)id >= (uint)_pieces.Length)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id {id} is outside the vocabulary (size {VocabSize}).");
            switch (_types[id])
            {
                case SentencePieceType.Control:
                    FlushBytes();
                    if (skipSpecialTokens) continue;
                    text.Append(_pieces[id]);
                    atSegmentStart = DummyPrefixOnEverySegment;
                    continue;
                case SentencePieceType.Unknown:
                    FlushBytes();
                    text.Append(" \u2047 ");
                    atSegmentStart = false;
                    continue;
                case SentencePieceType.Byte when TryParseBytePiece(_pieces[id], out byte value):
                    pendingBytes.Add(value);
                    atSegmentStart = false;
                    continue;
            }
            FlushBytes();
            var piece = _pieces[id].AsSpan();
            if (atSegmentStart && _addDummyPrefix && piece.Length > 0 && piece[0] == SpaceSymbol) piece = piece[1..];
            atSegmentStart = false;
            foreach (char c in piece) text.Append(c == SpaceSymbol ? ' ' : c);
        }
        FlushBytes();
        return text.ToString();
    }

    private static bool TryParseBytePiece(string piece, out byte value)
    {
        value = 0;
        return piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out value);
    }

    /// <summary>
    /// Writes the tokenizer into <paramref name="directory"/> so <see cref="TokenizerFactory.FromFolder"/> restores it:
    /// the tokenizer.model (or the tokenizer.json it was loaded from), the new added tokens as HF's
    /// <c>added_tokens.json</c>, and all added tokens with their special flag under <c>added_tokens_decoder</c> of
    /// <c>tokenizer_config.json</c> (merged into an existing file).
    /// </summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        if (_model is not null) _model.Save(Path.Combine(directory, TokenizerFactory.ModelFileName));
        else File.WriteAllText(Path.Combine(directory, TokenizerFactory.JsonFileName), _tokenizerJson);

        var newTokens = new JsonObject();
        foreach (var token in _addedTokens.Where(t => t.Id >= _pieces.Length).OrderBy(t => t.Id)) newTokens[token.Content] = token.Id;
        string addedPath = Path.Combine(directory, TokenizerFactory.AddedTokensFileName);
        if (newTokens.Count > 0) File.WriteAllText(addedPath, newTokens.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        else if (File.Exists(addedPath)) File.Delete(addedPath);

        string configPath = Path.Combine(directory, TokenizerFactory.ConfigFileName);
        JsonObject config = File.Exists(configPath) ? JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject
            ?? throw new InvalidDataException($"{configPath}: expected a JSON object; fix or remove the file before saving the tokenizer here.") : new JsonObject();
        var decoder = new JsonObject();
        foreach (var token in _addedTokens.OrderBy(t => t.Id))
        {
            decoder[token.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new JsonObject
            {
                ["content"] = token.Content,
                ["lstrip"] = false,
                ["normalized"] = false,
                ["rstrip"] = false,
                ["single_word"] = false,
                ["special"] = token.Special,
            };
        }

        config["added_tokens_decoder"] = decoder;
        config["legacy"] = DummyPrefixOnEverySegment;
        File.WriteAllText(configPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
