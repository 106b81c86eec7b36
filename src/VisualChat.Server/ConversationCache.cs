using VisualChat.Model;

namespace VisualChat.Server;

/// <summary>
/// Conversation states kept after their requests, keyed by the <see cref="PromptChunk.Key"/> of the last chunk they
/// hold, least recently used first out when their caches exceed the budget. A request takes the state of its longest
/// cached prefix (the entry leaves the cache: a state decodes for one sequence at a time) and gives it back, rewound to
/// its prompt, when it ends. Only the scheduler thread touches it.
/// </summary>
public sealed class ConversationCache(long budgetBytes, long bytesPerPosition) : IDisposable
{
    sealed record Entry(string Key, VisualChatConversationState State, long Bytes);

    readonly Dictionary<string, LinkedListNode<Entry>> entries = [];
    readonly LinkedList<Entry> lru = [];

    public long BudgetBytes => budgetBytes;
    public long UsedBytes { get; private set; }
    public int Count => entries.Count;
    public long Evictions { get; private set; }

    /// <summary>The state holding the longest cached prefix of <paramref name="chunks"/> and how many chunks it holds;
    /// (null, 0) when none is cached.</summary>
    public (VisualChatConversationState? State, int Chunks) Take(IReadOnlyList<PromptChunk> chunks)
    {
        for (int k = chunks.Count; k >= 1; k--) {
            if (!entries.Remove(chunks[k - 1].Key, out var node)) continue;
            lru.Remove(node);
            UsedBytes -= node.Value.Bytes;
            return (node.Value.State, k);
        }
        return (null, 0);
    }

    /// <summary>Keeps <paramref name="state"/> (which holds exactly the chunks up to the one keyed <paramref name="key"/>);
    /// evicts the least recently used entries over budget. The cache owns the state from here.</summary>
    public void Put(string key, VisualChatConversationState state)
    {
        long bytes = state.Cache.Capacity * bytesPerPosition;
        if (bytes > budgetBytes) {
            state.Dispose();
            return;
        }
        if (entries.Remove(key, out var existing)) {
            lru.Remove(existing);
            UsedBytes -= existing.Value.Bytes;
            existing.Value.State.Dispose();
        }
        while (UsedBytes + bytes > budgetBytes && lru.First is { } oldest) {
            lru.RemoveFirst();
            entries.Remove(oldest.Value.Key);
            UsedBytes -= oldest.Value.Bytes;
            oldest.Value.State.Dispose();
            Evictions++;
        }
        entries[key] = lru.AddLast(new Entry(key, state, bytes));
        UsedBytes += bytes;
    }

    public void Dispose()
    {
        foreach (var entry in lru) entry.State.Dispose();
        lru.Clear();
        entries.Clear();
        UsedBytes = 0;
    }
}
