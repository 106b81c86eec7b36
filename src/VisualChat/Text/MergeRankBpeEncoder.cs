using System.Text;

namespace VisualChat.Text;

/// <summary>
/// The BPE of HuggingFace <c>tokenizers</c> (models/bpe/word.rs) as configured by a LLaMA <c>tokenizer.json</c>:
/// characters missing from the vocabulary become their UTF-8 byte pieces up front (byte_fallback), then the pair with
/// the lowest merge rank is merged, repeatedly; equal ranks go to the leftmost pair. A priority queue over a linked list
/// of symbols keeps each merge O(log n).
/// </summary>
internal sealed class MergeRankBpeEncoder : IPieceEncoder
{
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocab;
    private readonly Dictionary<long, (int Rank, int MergedId)> _merges;
    private readonly int _unkId;
    private readonly bool _byteFallback;
    private readonly bool _fuseUnknown;
    private readonly int[] _byteIds = new int[256];

    /// <param name="merges">Pair of ids → (rank, id of the merged piece).</param>
    public MergeRankBpeEncoder(Dictionary<string, int> vocab, Dictionary<long, (int Rank, int MergedId)> merges, int unkId, bool byteFallback, bool fuseUnknown)
    {
        _vocab = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _merges = merges;
        _unkId = unkId;
        _byteFallback = byteFallback;
        _fuseUnknown = fuseUnknown;
        for (int b = 0; b < 256; b++) _byteIds[b] = vocab.TryGetValue(SentencePieceModel.BytePieceName((byte)b), out int id) ? id : -1;
    }

    public static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    private readonly record struct Merge(int Position, int Rank, int MergedId);

    private sealed class MergeOrder : IComparer<Merge>
    {
        public static readonly MergeOrder Instance = new();

        public int Compare(Merge x, Merge y) => x.Rank != y.Rank ? x.Rank.CompareTo(y.Rank) : x.Position.CompareTo(y.Position);
    }

    public void Encode(string normalized, List<int> output)
    {
        if (normalized.Length == 0) return;
        var ids = new List<int>(normalized.Length);
        bool previousWasUnknown = false;
        Span<byte> utf8 = stackalloc byte[4];
        for (int position = 0; position < normalized.Length;)
        {
            int width = char.IsHighSurrogate(normalized[position]) && position + 1 < normalized.Length && char.IsLowSurrogate(normalized[position + 1]) ? 2 : 1;
            var character = normalized.AsSpan(position, width);
            position += width;
            if (_vocab.TryGetValue(character, out int id))
            {
                ids.Add(id);
                previousWasUnknown = false;
                continue;
            }
            if (_byteFallback)
            {
                int byteCount = Encoding.UTF8.GetBytes(character, utf8);
                bool allBytesKnown = true;
                for (int i = 0; i < byteCount; i++) allBytesKnown &= _byteIds[utf8[i]] >= 0;
                if (allBytesKnown)
                {
                    for (int i = 0; i < byteCount; i++) ids.Add(_byteIds[utf8[i]]);
                    previousWasUnknown = false;
                    continue;
                }
            }
            if (_unkId < 0)
                throw new InvalidOperationException($"Character '{character}' is not in the tokenizer.json vocabulary and the model has no unk_token to stand for it.");
            if (!(_fuseUnknown && previousWasUnknown)) ids.Add(_unkId);
            previousWasUnknown = true;
        }

        int count = ids.Count;
        var symbol = ids.ToArray();
        var prev = new int[count];
        var next = new int[count];
        var removed = new bool[count];
        for (int i = 0; i < count; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < count ? i + 1 : -1;
        }

        var queue = new PriorityQueue<Merge, Merge>(count, MergeOrder.Instance);
        for (int i = 0; i + 1 < count; i++)
        {
            if (_merges.TryGetValue(PairKey(symbol[i], symbol[i + 1]), out var m))
                queue.Enqueue(new Merge(i, m.Rank, m.MergedId), new Merge(i, m.Rank, m.MergedId));
        }

        while (queue.TryDequeue(out var top, out _))
        {
            int left = top.Position;
            if (removed[left] || next[left] == -1) continue;
            int right = next[left];
            // Expired entry: the pair at this position changed since it was queued.
            if (!_merges.TryGetValue(PairKey(symbol[left], symbol[right]), out var current) || current.MergedId != top.MergedId) continue;
            symbol[left] = top.MergedId;
            removed[right] = true;
            next[left] = next[right];
            if (next[right] >= 0) prev[next[right]] = left;
            if (prev[left] >= 0 && _merges.TryGetValue(PairKey(symbol[prev[left]], symbol[left]), out var before))
                queue.Enqueue(new Merge(prev[left], before.Rank, before.MergedId), new Merge(prev[left], before.Rank, before.MergedId));
            if (next[left] >= 0 && _merges.TryGetValue(PairKey(symbol[left], symbol[next[left]]), out var after))
                queue.Enqueue(new Merge(left, after.Rank, after.MergedId), new Merge(left, after.Rank, after.MergedId));
        }

        for (int index = 0; index != -1; index = next[index]) output.Add(symbol[index]);
    }
}
