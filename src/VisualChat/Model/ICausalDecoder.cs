using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// What a decoding engine drives: a prefill that appends a prompt to one sequence's state, and a step that feeds one
/// token to each of several sequences. Every sequence owns its <see cref="DecoderState"/> (its KV cache rows), so
/// sequences can join and leave between steps without touching the others.
/// </summary>
public interface ICausalDecoder
{
    /// <summary>Width of the next-token logits (the LM head's rows).</summary>
    int OutputVocabSize { get; }
    /// <summary>Token ids that end a sequence unless the caller names others (config eos_token_id).</summary>
    IReadOnlyList<int> EosTokenIds { get; }
    /// <summary>Positions the model can attend over (max_position_embeddings).</summary>
    long MaxContext { get; }

    /// <summary>A fresh single-sequence state whose cache starts with room for <paramref name="capacity"/> positions (it grows).</summary>
    DecoderState CreateState(long capacity = 256);

    /// <summary>Appends <paramref name="prompt"/> to <paramref name="state"/> (a single sequence) and leaves its next-token
    /// logits in <see cref="DecoderState.NextLogits"/>; the prompt's ids join the state's history.</summary>
    void Prefill(DecoderState state, DecoderPrompt prompt);

    /// <summary>Feeds <paramref name="tokens"/>[i] to <paramref name="states"/>[i] (each a single sequence, tagged text) and
    /// leaves each state's next-token logits in <see cref="DecoderState.NextLogits"/>. The tokens join the histories.</summary>
    void Step(IReadOnlyList<DecoderState> states, IReadOnlyList<int> tokens);
}

/// <summary>
/// A prompt to prefill. <paramref name="Ids"/> are always given (they are the sequence's history for the repetition
/// penalty); <paramref name="Pixels"/> [n, 3, S, S] are the images for the ids' image placeholders (VisualChat);
/// <paramref name="InputsEmbeds"/> [1, L, hidden] replaces the ids' embeddings and <paramref name="Modality"/> [1, L]
/// tags the positions (language models that take them).
/// </summary>
public sealed record DecoderPrompt(IReadOnlyList<int> Ids, Tensor? Pixels = null, Tensor? InputsEmbeds = null, Tensor? Modality = null);

/// <summary>
/// One sequence's (or, for batched prefill, several rows') decoding state: the KV cache of every position so far (with
/// its padding and modality), all token ids seen per row, and the logits for the next token.
/// </summary>
public class DecoderState : IDisposable
{
    readonly List<int>[] history;

    public DecoderState(int numLayers, long capacity, int batchSize = 1)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), "A decoder state needs at least one row.");
        Cache = new KVCache(numLayers, capacity);
        BatchSize = batchSize;
        history = Enumerable.Range(0, batchSize).Select(_ => new List<int>()).ToArray();
    }

    public KVCache Cache { get; }
    public int BatchSize { get; }
    /// <summary>Positions in the cache (padding included).</summary>
    public long Length => Cache.Length;
    /// <summary>Token ids per row (prompts with placeholders, generated tokens), for the repetition penalty.</summary>
    public IReadOnlyList<IReadOnlyList<int>> History => history;
    /// <summary>[B, vocab] logits for the next token, after the last appended position; null before any.</summary>
    public Tensor? NextLogits { get; private set; }

    /// <summary>For decoders: the next-token logits [B, vocab] after the last position (the state takes ownership).</summary>
    public void SetNextLogits(Tensor logits)
    {
        NextLogits?.Dispose();
        NextLogits = logits.DetachFromDisposeScope();
    }

    /// <summary>For decoders: ids that joined row <paramref name="row"/>.</summary>
    public void AddHistory(int row, IEnumerable<int> ids) => history[row].AddRange(ids);

    /// <summary>Returns a single sequence to an earlier point of itself: the cache keeps its first <paramref name="length"/>
    /// positions, the history its first <paramref name="historyCount"/> ids, and <paramref name="nextLogits"/> (taken over)
    /// become the next-token logits. Decoding only appends, so the kept positions are exactly those computed before
    /// (a server keeps the part of a generated answer that the conversation's next turn repeats this way). Null
    /// <paramref name="nextLogits"/> leaves the state without logits until the next append.</summary>
    public void Rewind(long length, int historyCount, Tensor? nextLogits)
    {
        RequireSingleSequence("DecoderState.Rewind");
        if (historyCount < 0 || historyCount > history[0].Count)
            throw new ArgumentOutOfRangeException(nameof(historyCount), $"Cannot rewind a history of {history[0].Count} ids to {historyCount}.");
        Cache.Crop(length);
        history[0].RemoveRange(historyCount, history[0].Count - historyCount);
        if (nextLogits is not null) {
            SetNextLogits(nextLogits);
        } else {
            NextLogits?.Dispose();
            NextLogits = null;
        }
    }

    internal void RequireSingleSequence(string operation)
    {
        if (BatchSize != 1)
            throw new ArgumentException($"{operation} takes single-sequence states (batch size 1) but this state has {BatchSize} rows; create one state per sequence.");
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (!disposing) return;
        Cache.Dispose();
        NextLogits?.Dispose();
        NextLogits = null;
    }
}
