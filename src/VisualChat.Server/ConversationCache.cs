using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Server;

/// <summary>A conversation state given back to the cache when its request ends: the state holds the prompt (every chunk up
/// to the one keyed <see cref="ConversationCache.Put"/>'s key) followed by <paramref name="Answer"/>, the generated ids
/// that were fed back (every sampled token but the last); <paramref name="PromptLogits"/> are the next-token logits at
/// <paramref name="PromptEnd"/>.</summary>
internal sealed record CachedTurn(VisualChatConversationState State, long PromptEnd, int HistoryEnd, Tensor PromptLogits, int[] Answer);

/// <summary>
/// Conversation states kept after their requests, keyed by the <see cref="PromptChunk.Key"/> of the last whole chunk
/// they hold, least recently used first out when their caches exceed the budget. A request takes the state of its
/// longest cached prefix (the entry leaves the cache: a state decodes for one sequence at a time) and gives it back
/// when it ends. The state keeps the generated answer's positions too: an OpenAI client sends the answer back as the
/// start of the next turn, so those positions are reused as far as the next turn's ids repeat them, and only the rest
/// of that turn is prefilled. Only the scheduler thread touches it.
/// </summary>
internal sealed class ConversationCache(long budgetBytes, long bytesPerPosition) : IDisposable
{
    sealed record Entry(string Key, CachedTurn Turn, long Bytes);

    readonly Dictionary<string, LinkedListNode<Entry>> entries = [];
    readonly LinkedList<Entry> lru = [];

    public long BudgetBytes => budgetBytes;
    public long UsedBytes { get; private set; }
    public int Count => entries.Count;
    /// <summary>States dropped to stay within the budget: the least recently used, or one larger than the whole budget.</summary>
    public long Evictions { get; private set; }

    /// <summary>The state holding the longest cached prefix of <paramref name="chunks"/>: it holds the first
    /// <c>Chunks</c> chunks whole and the first <c>AnswerIds</c> ids of the next chunk (the part of the cached answer
    /// that chunk repeats; at least one id of the chunk is always left to prefill, which gives the logits). (null, 0, 0)
    /// when nothing is cached.</summary>
    public (VisualChatConversationState? State, int Chunks, int AnswerIds) Take(IReadOnlyList<PromptChunk> chunks)
    {
        for (int k = chunks.Count; k >= 1; k--) {
            if (!entries.Remove(chunks[k - 1].Key, out var node)) continue;
            lru.Remove(node);
            UsedBytes -= node.Value.Bytes;
            var turn = node.Value.Turn;
            int kept = 0;
            if (k < chunks.Count) {
                var next = chunks[k].Ids;
                int limit = Math.Min(turn.Answer.Length, next.Length - 1);
                while (kept < limit && turn.Answer[kept] == next[kept]) kept++;
            }
            if (kept == 0) {
                turn.State.Rewind(turn.PromptEnd, turn.HistoryEnd, turn.PromptLogits);
            } else {
                // No logits: the rest of the chunk is appended next. A state that holds logits is at a chunk boundary.
                turn.PromptLogits.Dispose();
                turn.State.Rewind(turn.PromptEnd + kept, turn.HistoryEnd + kept, null);
            }
            return (turn.State, k, kept);
        }
        return (null, 0, 0);
    }

    /// <summary>Keeps <paramref name="turn"/> (whose prompt ends with the chunk keyed <paramref name="key"/>); evicts the
    /// least recently used entries over budget. The cache owns the turn's state and logits from here.</summary>
    public void Put(string key, CachedTurn turn)
    {
        long bytes = turn.State.Cache.Capacity * bytesPerPosition;
        if (bytes > budgetBytes) {
            Free(turn);
            Evictions++;
            return;
        }
        if (entries.Remove(key, out var existing)) {
            lru.Remove(existing);
            UsedBytes -= existing.Value.Bytes;
            Free(existing.Value.Turn);
        }
        while (UsedBytes + bytes > budgetBytes && lru.First is { } oldest) {
            lru.RemoveFirst();
            entries.Remove(oldest.Value.Key);
            UsedBytes -= oldest.Value.Bytes;
            Free(oldest.Value.Turn);
            Evictions++;
        }
        entries[key] = lru.AddLast(new Entry(key, turn, bytes));
        UsedBytes += bytes;
    }

    static void Free(CachedTurn turn)
    {
        turn.State.Dispose();
        turn.PromptLogits.Dispose();
    }

    public void Dispose()
    {
        foreach (var entry in lru) Free(entry.Turn);
        lru.Clear();
        entries.Clear();
        UsedBytes = 0;
    }
}
