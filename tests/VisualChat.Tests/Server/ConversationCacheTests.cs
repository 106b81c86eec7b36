using VisualChat.Model;
using VisualChat.Server;
using static TorchSharp.torch;

namespace VisualChat.Tests.Server;

/// <summary>
/// The conversation cache keeps a turn's answer positions and hands back as much of them as the next turn's ids repeat;
/// the logits after the rest of that turn agree with a cold prefill of the whole prompt (the answer's positions came
/// from decode steps, so up to float rounding), and a next turn that repeats none of the answer gets the prompt's own
/// logits back bit for bit.
/// </summary>
public sealed class ConversationCacheTests : IDisposable
{
    static readonly int[] Prompt = [1, 40, 41, 42, 43, 44, 45];
    static readonly int[] Answer = [60, 61, 62, 63];
    readonly VisualChatModel model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 5);

    ConversationCache NewCacheHoldingATurn()
    {
        var cache = new ConversationCache(1L << 30, 1);
        var state = model.CreateConversation(1, 64);
        model.Append(state, Prompt);
        long promptEnd = state.Length;
        int historyEnd = state.History[0].Count;
        Tensor promptLogits;
        using (no_grad()) promptLogits = state.NextLogits!.clone().DetachFromDisposeScope();
        foreach (int token in Answer) model.Step([state], [token]);   // as the engine feeds sampled tokens back
        cache.Put("k0", new CachedTurn(state, promptEnd, historyEnd, promptLogits, Answer));
        return cache;
    }

    static PromptChunk Chunk(int[] ids, string key) => new(ids, [], ids.Length, key);

    float[] ColdLogits(params int[][] chunks)
    {
        using var state = model.CreateConversation(1, 64);
        foreach (var ids in chunks) model.Append(state, ids);
        return state.NextLogits!.data<float>().ToArray();
    }

    [Theory]
    [InlineData(new[] { 60, 61, 90, 91 }, 2)]            // repeats the answer's first two ids, then differs
    [InlineData(new[] { 60, 61, 62, 63, 2, 92, 93 }, 4)] // repeats all of it (the EOS and the next question follow)
    [InlineData(new[] { 60, 61, 62 }, 2)]                // the chunk is a prefix of the answer: its last id is prefilled
    public void TheNextTurnReusesTheAnswerPositionsItRepeats_AndEqualsAColdPrefill(int[] next, int expectedKept)
    {
        using var cache = NewCacheHoldingATurn();
        var (state, chunks, kept) = cache.Take([Chunk(Prompt, "k0"), Chunk(next, "k1")]);
        using var taken = state!;
        Assert.Equal(1, chunks);
        Assert.Equal(expectedKept, kept);
        Assert.Equal(Prompt.Length + expectedKept, taken.Length);
        Assert.Equal([.. Prompt, .. next[..expectedKept]], taken.History[0]);
        model.Append(taken, next[kept..]);
        var warm = taken.NextLogits!.data<float>().ToArray();
        var cold = ColdLogits(Prompt, next);
        for (int i = 0; i < cold.Length; i++) Assert.True(Math.Abs(warm[i] - cold[i]) <= 1e-4f * (1 + Math.Abs(cold[i])), $"logit {i}: warm {warm[i]} cold {cold[i]}");
    }

    [Fact]
    public void ANextTurnThatRepeatsNoneOfTheAnswerGetsThePromptsStateAndLogitsBack()
    {
        using var cache = NewCacheHoldingATurn();
        var (state, chunks, kept) = cache.Take([Chunk(Prompt, "k0"), Chunk([70, 71], "k1")]);
        using var taken = state!;
        Assert.Equal((1, 0), (chunks, kept));
        Assert.Equal(Prompt.Length, taken.Length);
        Assert.Equal(Prompt, taken.History[0]);
        Assert.Equal(ColdLogits(Prompt), taken.NextLogits!.data<float>().ToArray());
        Assert.Equal(0, cache.Count);
    }

    [Fact]
    public void TheSamePromptAgainRewindsToItsEnd_AndAnUnknownPrefixFindsNothing()
    {
        using var cache = NewCacheHoldingATurn();
        Assert.Equal((null, 0, 0), cache.Take([Chunk([1, 50], "other")]));
        var (state, chunks, kept) = cache.Take([Chunk(Prompt, "k0")]);
        using var taken = state!;
        Assert.Equal((1, 0), (chunks, kept));
        Assert.Equal(Prompt.Length, taken.Length);
        Assert.Equal(ColdLogits(Prompt), taken.NextLogits!.data<float>().ToArray());
    }

    public void Dispose() => model.Dispose();
}
