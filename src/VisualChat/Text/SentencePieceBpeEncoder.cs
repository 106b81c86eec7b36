using System.Text;

namespace VisualChat.Text;

/// <summary>Turns one normalized text segment (spaces already escaped to "▁") into vocabulary ids.</summary>
internal interface IPieceEncoder
{
    void Encode(string normalized, List<int> output);
}

/// <summary>
/// SentencePiece's BPE segmentation (bpe_model.cc, then the byte-fallback / unknown handling of
/// sentencepiece_processor.cc), reproduced step for step so ids match SentencePiece exactly:
/// the text is split into characters (user-defined pieces matched first, longest match, and never merged), then the
/// adjacent pair whose concatenation is a vocabulary piece with the highest score is merged, repeatedly; among equal
/// scores the leftmost pair wins. Pairs wait in a priority queue over a linked list of symbols, so a merge costs
/// O(log n) instead of a rescan of the text.
/// </summary>
internal sealed class SentencePieceBpeEncoder : IPieceEncoder
{
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _mergeablePieces;
    private readonly Dictionary<string, int> _mergeablePieceIds;
    private readonly Dictionary<string, int> _reservedPieceIds;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _reservedPieces;
    private readonly float[] _scores;
    private readonly SentencePieceType[] _types;
    private readonly string[] _userDefinedLongestFirst;
    private readonly int _unkId;
    private readonly bool _byteFallback;
    private readonly int[] _byteIds = new int[256];

    public SentencePieceBpeEncoder(SentencePieceModel model, string source)
    {
        var pieces = model.Pieces;
        _scores = new float[pieces.Count];
        _types = new SentencePieceType[pieces.Count];
        _mergeablePieceIds = new Dictionary<string, int>(StringComparer.Ordinal);
        _reservedPieceIds = new Dictionary<string, int>(StringComparer.Ordinal);
        var userDefined = new List<string>();
        _unkId = -1;
        for (int id = 0; id < pieces.Count; id++)
        {
            var entry = pieces[id];
            _scores[id] = entry.Score;
            _types[id] = entry.Type;
            // As in sentencepiece's ModelInterface::InitializePieces: NORMAL, USER_DEFINED and UNUSED pieces can be
            // produced by merges; the others (control, unknown, byte) only by explicit lookup.
            bool mergeable = entry.Type is SentencePieceType.Normal or SentencePieceType.UserDefined or SentencePieceType.Unused;
            if (!(mergeable ? _mergeablePieceIds : _reservedPieceIds).TryAdd(entry.Piece, id))
                throw new InvalidDataException($"{source}: piece '{entry.Piece}' (id {id}) appears twice in the vocabulary.");
            if (entry.Type == SentencePieceType.UserDefined) userDefined.Add(entry.Piece);
            if (entry.Type == SentencePieceType.Unknown) _unkId = id;
        }
        if (_unkId < 0)
            throw new InvalidDataException($"{source}: the vocabulary has no UNKNOWN piece; sentencepiece requires one.");
        _mergeablePieces = _mergeablePieceIds.GetAlternateLookup<ReadOnlySpan<char>>();
        _reservedPieces = _reservedPieceIds.GetAlternateLookup<ReadOnlySpan<char>>();
        _userDefinedLongestFirst = userDefined.Where(p => p.Length > 0).OrderByDescending(p => p.Length).ToArray();
        _byteFallback = model.TrainerSpec.ByteFallback;
        for (int b = 0; b < 256; b++) _byteIds[b] = PieceToId(SentencePieceModel.BytePieceName((byte)b));
    }

    private int PieceToId(string piece) =>
        _reservedPieceIds.TryGetValue(piece, out int id) ? id : _mergeablePieceIds.TryGetValue(piece, out id) ? id : _unkId;

    private readonly record struct SymbolPair(int Left, int Right, int Length, float Score);

    /// <summary>Highest score first; on equal scores the leftmost pair (sentencepiece's SymbolPairComparator).</summary>
    private sealed class PairOrder : IComparer<SymbolPair>
    {
        public static readonly PairOrder Instance = new();

        public int Compare(SymbolPair x, SymbolPair y)
        {
            int byScore = y.Score.CompareTo(x.Score);
            return byScore != 0 ? byScore : x.Left.CompareTo(y.Left);
        }
    }

    public void Encode(string normalized, List<int> output)
    {
        if (normalized.Length == 0) return;

        // Symbols are always contiguous ranges of `normalized`: start, length and a doubly linked list.
        int capacity = normalized.Length;
        var start = new int[capacity];
        var length = new int[capacity];
        var prev = new int[capacity];
        var next = new int[capacity];
        var frozen = new bool[capacity];
        int count = 0;
        for (int position = 0; position < normalized.Length;)
        {
            int matched = MatchUserDefined(normalized, position);
            bool isUserDefined = matched > 0;
            if (!isUserDefined) matched = char.IsHighSurrogate(normalized[position]) && position + 1 < normalized.Length && char.IsLowSurrogate(normalized[position + 1]) ? 2 : 1;
            start[count] = position;
            length[count] = matched;
            frozen[count] = isUserDefined;
            prev[count] = count - 1;
            position += matched;
            next[count] = position < normalized.Length ? count + 1 : -1;
            count++;
        }

        var agenda = new PriorityQueue<SymbolPair, SymbolPair>(count, PairOrder.Instance);
        Dictionary<string, (string Left, string Right)>? unusedMerges = null;

        void MaybeAddPair(int left, int right)
        {
            if (left == -1 || right == -1 || frozen[left] || frozen[right]) return;
            int pairLength = length[left] + length[right];
            var piece = normalized.AsSpan(start[left], pairLength);
            if (!_mergeablePieces.TryGetValue(piece, out int id)) return;
            var pair = new SymbolPair(left, right, pairLength, _scores[id]);
            agenda.Enqueue(pair, pair);
            // Merges through UNUSED pieces are undone at the end (sentencepiece's rev_merge), so remember how they formed.
            if (_types[id] == SentencePieceType.Unused)
            {
                unusedMerges ??= new Dictionary<string, (string, string)>(StringComparer.Ordinal);
                unusedMerges[piece.ToString()] = (normalized.Substring(start[left], length[left]), normalized.Substring(start[right], length[right]));
            }
        }

        for (int i = 1; i < count; i++) MaybeAddPair(i - 1, i);

        while (agenda.TryDequeue(out var top, out _))
        {
            // Stale entry: one side was merged away or grew since the pair was queued.
            if (length[top.Left] == 0 || length[top.Right] == 0 || length[top.Left] + length[top.Right] != top.Length) continue;
            length[top.Left] = top.Length;
            next[top.Left] = next[top.Right];
            if (next[top.Right] >= 0) prev[next[top.Right]] = top.Left;
            length[top.Right] = 0;
            MaybeAddPair(prev[top.Left], top.Left);
            MaybeAddPair(top.Left, next[top.Left]);
        }

        bool previousWasUnknown = false;
        for (int index = 0; index != -1; index = next[index])
        {
            var piece = normalized.AsSpan(start[index], length[index]);
            if (unusedMerges is not null && !_reservedPieces.ContainsKey(piece))
                Resegment(piece.ToString(), unusedMerges, output, ref previousWasUnknown);
            else
                Emit(piece, output, ref previousWasUnknown);
        }
    }

    private int MatchUserDefined(string text, int position)
    {
        foreach (var candidate in _userDefinedLongestFirst)
        {
            if (position + candidate.Length <= text.Length && string.CompareOrdinal(text, position, candidate, 0, candidate.Length) == 0)
                return candidate.Length;
        }

        return 0;
    }

    private void Resegment(string piece, Dictionary<string, (string Left, string Right)> unusedMerges, List<int> output, ref bool previousWasUnknown)
    {
        if (_mergeablePieceIds.TryGetValue(piece, out int id) && _types[id] == SentencePieceType.Unused && unusedMerges.TryGetValue(piece, out var parts))
        {
            Resegment(parts.Left, unusedMerges, output, ref previousWasUnknown);
            Resegment(parts.Right, unusedMerges, output, ref previousWasUnknown);
            return;
        }
        Emit(piece, output, ref previousWasUnknown);
    }

    private void Emit(ReadOnlySpan<char> piece, List<int> output, ref bool previousWasUnknown)
    {
        // ModelInterface::PieceToId: reserved (control/unknown/byte) pieces first, then mergeable ones, else unknown.
        int id = _reservedPieces.TryGetValue(piece, out int reserved) ? reserved
            : _mergeablePieces.TryGetValue(piece, out int mergeable) ? mergeable : _unkId;
        bool isUnknown = _types[id] == SentencePieceType.Unknown;
        if (isUnknown && _byteFallback)
        {
            Span<byte> utf8 = stackalloc byte[Encoding.UTF8.GetMaxByteCount(piece.Length)];
            int byteCount = Encoding.UTF8.GetBytes(piece, utf8);
            foreach (byte b in utf8[..byteCount]) output.Add(_byteIds[b]);
            previousWasUnknown = false;
            return;
        }
        // sentencepiece_processor.cc fuses a run of unknown pieces into one so the decoder sees a single ⁇.
        if (isUnknown && previousWasUnknown) return;
        output.Add(id);
        previousWasUnknown = isUnknown;
    }
}
