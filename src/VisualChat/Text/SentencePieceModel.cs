namespace VisualChat.Text;

/// <summary>ModelProto.SentencePiece.Type, numbered as in sentencepiece_model.proto.</summary>
public enum SentencePieceType
{
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>TrainerSpec.ModelType, numbered as in sentencepiece_model.proto.</summary>
public enum SentencePieceModelType
{
    Unigram = 1,
    Bpe = 2,
    Word = 3,
    Char = 4,
}

/// <summary>One vocabulary entry; its id is its index in <see cref="SentencePieceModel.Pieces"/>.</summary>
public sealed record SentencePieceEntry(string Piece, float Score, SentencePieceType Type = SentencePieceType.Normal);

/// <summary>The TrainerSpec fields that tokenization depends on (other fields are kept as read, untouched).</summary>
public sealed class SentencePieceTrainerSpec
{
    internal ProtoFields Fields { get; }

    internal SentencePieceTrainerSpec(ProtoFields fields) => Fields = fields;

    public SentencePieceTrainerSpec() : this(new ProtoFields()) { }

    public SentencePieceModelType ModelType
    {
        get => (SentencePieceModelType)Fields.GetInt32(3, (int)SentencePieceModelType.Unigram);
        set => Fields.SetInt32(3, (int)value);
    }

    public int VocabSize { get => Fields.GetInt32(4, 8000); set => Fields.SetInt32(4, value); }
    public bool TreatWhitespaceAsSuffix { get => Fields.GetBool(24, false); set => Fields.SetBool(24, value); }
    public bool ByteFallback { get => Fields.GetBool(35, false); set => Fields.SetBool(35, value); }
    public int UnkId { get => Fields.GetInt32(40, 0); set => Fields.SetInt32(40, value); }
    public int BosId { get => Fields.GetInt32(41, 1); set => Fields.SetInt32(41, value); }
    public int EosId { get => Fields.GetInt32(42, 2); set => Fields.SetInt32(42, value); }
    public int PadId { get => Fields.GetInt32(43, -1); set => Fields.SetInt32(43, value); }
}

/// <summary>The NormalizerSpec fields that tokenization depends on (other fields are kept as read, untouched).</summary>
public sealed class SentencePieceNormalizerSpec
{
    internal ProtoFields Fields { get; }

    internal SentencePieceNormalizerSpec(ProtoFields fields) => Fields = fields;

    public SentencePieceNormalizerSpec() : this(new ProtoFields()) { }

    public string Name { get => Fields.GetString(1) ?? ""; set => Fields.SetString(1, value); }
    public int PrecompiledCharsMapLength => Fields.GetBytes(2)?.Length ?? 0;
    public bool AddDummyPrefix { get => Fields.GetBool(3, true); set => Fields.SetBool(3, value); }
    public bool RemoveExtraWhitespaces { get => Fields.GetBool(4, true); set => Fields.SetBool(4, value); }
    public bool EscapeWhitespaces { get => Fields.GetBool(5, true); set => Fields.SetBool(5, value); }
}

/// <summary>
/// A SentencePiece <c>tokenizer.model</c> file (the ModelProto protobuf): the vocabulary with scores and types plus the
/// trainer and normalizer settings. Fields not modelled here are preserved, so <see cref="Save"/> of a loaded model
/// writes the same bytes back.
/// </summary>
public sealed class SentencePieceModel
{
    private const int PiecesField = 1, TrainerSpecField = 2, NormalizerSpecField = 3;
    private const int PieceTextField = 1, PieceScoreField = 2, PieceTypeField = 3;

    private readonly ProtoFields _fields;

    public List<SentencePieceEntry> Pieces { get; }
    public SentencePieceTrainerSpec TrainerSpec { get; }
    public SentencePieceNormalizerSpec NormalizerSpec { get; }

    public SentencePieceModel(IEnumerable<SentencePieceEntry> pieces, SentencePieceTrainerSpec trainerSpec, SentencePieceNormalizerSpec normalizerSpec)
        : this(new ProtoFields(), pieces.ToList(), trainerSpec, normalizerSpec) { }

    private SentencePieceModel(ProtoFields fields, List<SentencePieceEntry> pieces, SentencePieceTrainerSpec trainerSpec, SentencePieceNormalizerSpec normalizerSpec)
    {
        _fields = fields;
        Pieces = pieces;
        TrainerSpec = trainerSpec;
        NormalizerSpec = normalizerSpec;
    }

    public static SentencePieceModel Load(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"SentencePiece model '{path}' does not exist; pass the path of a tokenizer.model file.", path);
        return Parse(File.ReadAllBytes(path), path);
    }

    /// <param name="source">Names the data in error messages (usually the file path).</param>
    public static SentencePieceModel Parse(ReadOnlySpan<byte> data, string source = "SentencePiece model")
    {
        var fields = ProtoFields.Parse(data, source);
        var pieces = new List<SentencePieceEntry>();
        foreach (var pieceBytes in fields.GetRepeatedBytes(PiecesField))
        {
            var pieceFields = ProtoFields.Parse(pieceBytes, $"{source} (piece {pieces.Count})");
            string piece = pieceFields.GetString(PieceTextField)
                ?? throw new InvalidDataException($"{source}: piece {pieces.Count} has no text; the model file is damaged.");
            var type = (SentencePieceType)pieceFields.GetInt32(PieceTypeField, (int)SentencePieceType.Normal);
            if (!Enum.IsDefined(type))
                throw new InvalidDataException($"{source}: piece {pieces.Count} ('{piece}') has unknown type {(int)type}.");
            pieces.Add(new SentencePieceEntry(piece, pieceFields.GetFloat(PieceScoreField, 0f), type));
        }
        if (pieces.Count == 0)
            throw new InvalidDataException($"{source}: the model has no pieces; it is not a SentencePiece tokenizer.model file.");
        var trainer = ProtoFields.Parse(fields.GetBytes(TrainerSpecField) ?? [], $"{source} (trainer_spec)");
        var normalizer = ProtoFields.Parse(fields.GetBytes(NormalizerSpecField) ?? [], $"{source} (normalizer_spec)");
        return new SentencePieceModel(fields, pieces, new SentencePieceTrainerSpec(trainer), new SentencePieceNormalizerSpec(normalizer));
    }

    public byte[] ToBytes()
    {
        // Pieces and both specs are rewritten from their current values; every other top-level field (self-test data,
        // denormalizer spec) is kept as it was read.
        _fields.RemoveAll(PiecesField);
        foreach (var entry in Pieces)
        {
            var pieceFields = new ProtoFields();
            pieceFields.SetString(PieceTextField, entry.Piece);
            pieceFields.SetFloat(PieceScoreField, entry.Score);
            // sentencepiece leaves the type unset for NORMAL pieces; matching that keeps saved real models byte-identical.
            if (entry.Type != SentencePieceType.Normal) pieceFields.SetInt32(PieceTypeField, (int)entry.Type);
            _fields.AddBytes(PiecesField, pieceFields.ToBytes());
        }
        _fields.SetBytes(TrainerSpecField, TrainerSpec.Fields.ToBytes());
        _fields.SetBytes(NormalizerSpecField, NormalizerSpec.Fields.ToBytes());
        return _fields.ToBytes();
    }

    public void Save(string path)
    {
        string? directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null) Directory.CreateDirectory(directory);
        File.WriteAllBytes(path, ToBytes());
    }

    /// <summary>The byte piece name sentencepiece uses for byte fallback, e.g. <c>&lt;0x0A&gt;</c>.</summary>
    public static string BytePieceName(byte value) => $"<0x{value:X2}>";
}
