using TorchSharp;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Tests.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Inference;

public class GenerationTests
{
    static LlamaForCausalLM Model(bool tied = false)
    {
        var config = LlamaTestModels.Tiny(tied);
        config.EosTokenId = System.Text.Json.Nodes.JsonValue.Create(2);
        config.MaxPositionEmbeddings = 64;
        return LlamaTestModels.ClosedFormModel(config);
    }

    static readonly int[] Prompt = { 1, 5, 77, 3 };

    /// <summary>Slow reference: full forward over the whole sequence for every new token, argmax.</summary>
    static List<int> NaiveGreedy(LlamaForCausalLM model, IReadOnlyList<int> prompt, int steps)
    {
        var ids = prompt.Select(i => (long)i).ToList();
        var generated = new List<int>();
        using var noGrad = no_grad();
        for (int s = 0; s < steps; s++) {
            using var scope = NewDisposeScope();
            var logits = model.forward(new CausalLMInput(InputIds: tensor(ids.ToArray()).unsqueeze(0))).Logits;
            int next = (int)logits[0, -1].argmax().item<long>();
            generated.Add(next);
            ids.Add(next);
            if (next == 2) break;
        }
        return generated;
    }

    [Fact]
    public void GreedyMatchesNaiveFullRecomputeAndIsDeterministic()
    {
        using var model = Model();
        var options = new GenerationOptions { MaxNewTokens = 12 };
        var first = TextGenerator.Generate(model, Prompt, options);
        var second = TextGenerator.Generate(model, Prompt, options);
        Assert.Equal(NaiveGreedy(model, Prompt, 12), first.TokenIds);
        Assert.Equal(first.TokenIds, second.TokenIds);
        Assert.Equal(first.TokenIds.Count == 12 ? FinishReason.Length : FinishReason.EndOfSequence, first.FinishReason);
    }

    [Fact]
    public void BatchedLeftPaddedEqualsUnbatched()
    {
        using var model = Model();
        var prompts = new[] { new[] { 1, 9 }, new[] { 1, 5, 77, 3, 100, 42 }, new[] { 1, 60, 61, 62 } };
        var options = new GenerationOptions { MaxNewTokens = 8 };
        var streamed = new List<(int row, int token)>();
        var batched = TextGenerator.GenerateBatch(model, prompts, options, onToken: (row, token) => streamed.Add((row, token)));
        for (int b = 0; b < prompts.Length; b++) {
            var alone = TextGenerator.Generate(model, prompts[b], options);
            Assert.Equal(alone.TokenIds, batched[b].TokenIds);
            Assert.Equal(alone.FinishReason, batched[b].FinishReason);
            Assert.Equal(alone.TokenIds, streamed.Where(s => s.row == b).Select(s => s.token).ToArray());
        }
    }

    [Fact]
    public void SamplingIsReproducibleWithSeedAndTopK1IsGreedy()
    {
        using var model = Model();
        var sampling = new GenerationOptions { MaxNewTokens = 10, Temperature = 1.5, TopP = 0.95, Seed = 123, StopTokenIds = Array.Empty<int>() };
        var a = TextGenerator.Generate(model, Prompt, sampling);
        var b = TextGenerator.Generate(model, Prompt, sampling);
        Assert.Equal(a.TokenIds, b.TokenIds);
        Assert.Equal(10, a.TokenIds.Count);
        var seeds = Enumerable.Range(0, 4).Select(s => TextGenerator.Generate(model, Prompt, sampling with { Seed = (ulong)s }).TokenIds).ToList();
        Assert.True(seeds.Select(s => string.Join(",", s)).Distinct().Count() > 1, "different seeds should give different samples at temperature 1.5");

        var greedy = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 10, StopTokenIds = Array.Empty<int>() });
        var topK1 = TextGenerator.Generate(model, Prompt, sampling with { TopK = 1, TopP = 1.0, Seed = 9 });
        Assert.Equal(greedy.TokenIds, topK1.TokenIds);
    }

    [Fact]
    public void RepetitionPenaltyFollowsHfSemantics()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 2f, -2f, 1f, -1f }).view(1, 4);
        var seen = tensor(new[] { true, true, false, false }).view(1, 4);
        var penalized = Sampler.ApplyRepetitionPenalty(logits, seen, 2.0).data<float>().ToArray();
        Assert.Equal(new[] { 1f, -4f, 1f, -1f }, penalized);

        // Prompt ids count as seen: the greedy pick changes when the favourite already appeared.
        using var model = Model();
        var plain = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 1 });
        var withFavouriteInPrompt = Prompt.Append(plain.TokenIds[0]).ToArray();
        var unpenalized = TextGenerator.Generate(model, withFavouriteInPrompt, new GenerationOptions { MaxNewTokens = 24, StopTokenIds = Array.Empty<int>() });
        var penalizedRun = TextGenerator.Generate(model, withFavouriteInPrompt, new GenerationOptions { MaxNewTokens = 24, RepetitionPenalty = 1000, StopTokenIds = Array.Empty<int>() });
        Assert.True(unpenalized.TokenIds.Distinct().Count() < unpenalized.TokenIds.Count, "the unpenalized run should repeat itself for this test to mean anything");
        // Generated ids join the seen set too: nothing repeats, neither the prompt nor earlier output.
        Assert.DoesNotContain(penalizedRun.TokenIds, t => withFavouriteInPrompt.Contains(t));
        Assert.Equal(penalizedRun.TokenIds.Count, penalizedRun.TokenIds.Distinct().Count());
        Assert.NotEqual(unpenalized.TokenIds, penalizedRun.TokenIds);
    }

    [Fact]
    public void TopKAndTopPFilterLikeHf()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 1f, 3f, 2f, 0f }).view(1, 4);
        var topK = Sampler.ApplyTopK(logits, 2).data<float>().ToArray();
        Assert.Equal(new[] { float.NegativeInfinity, 3f, 2f, float.NegativeInfinity }, topK);
        // probabilities ≈ [0.087, 0.644, 0.237, 0.032]: p = 0.8 keeps the two largest.
        var topP = Sampler.ApplyTopP(logits, 0.8).data<float>().ToArray();
        Assert.Equal(new[] { float.NegativeInfinity, 3f, 2f, float.NegativeInfinity }, topP);
        var tiny = Sampler.ApplyTopP(logits, 1e-6).data<float>().ToArray();
        Assert.Equal(new[] { float.NegativeInfinity, 3f, float.NegativeInfinity, float.NegativeInfinity }, tiny);
    }

    [Fact]
    public void StopStringsAndEosEndGeneration()
    {
        using var model = Model();
        static string Letters(IReadOnlyList<int> ids) => string.Concat(ids.Select(i => (char)('a' + i % 26)));
        var free = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 10, StopTokenIds = Array.Empty<int>() });
        Assert.Equal(FinishReason.Length, free.FinishReason);
        Assert.Equal(10, free.TokenIds.Count);

        var stop = Letters(free.TokenIds.Skip(3).Take(2).ToArray());
        var stopped = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 10, StopStrings = new[] { stop }, StopTokenIds = Array.Empty<int>() }, Letters);
        Assert.Equal(FinishReason.StopString, stopped.FinishReason);
        Assert.Equal(stop, stopped.StopString);
        Assert.Contains(stop, Letters(stopped.TokenIds));
        Assert.True(stopped.TokenIds.Count <= 5);
        Assert.Equal(free.TokenIds.Take(stopped.TokenIds.Count), stopped.TokenIds);

        var eos = free.TokenIds[2];
        var ended = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 10, StopTokenIds = new[] { eos } });
        Assert.Equal(FinishReason.EndOfSequence, ended.FinishReason);
        Assert.Equal(eos, ended.TokenIds[^1]);
        Assert.Equal(free.TokenIds.TakeWhile(t => t != eos).Count() + 1, ended.TokenIds.Count);

        Assert.Throws<ArgumentException>(() => TextGenerator.Generate(model, Prompt, new GenerationOptions { StopStrings = new[] { "x" } }));
    }

    /// <summary>One letter per id; EOS id chosen by the test.</summary>
    sealed class LetterTokenizer(int eos) : VisualChat.Text.ITokenizer
    {
        public int VocabSize => 128;
        public int BosId => 1;
        public int EosId => eos;
        public int PadId => -1;
        public IReadOnlyList<int> Encode(string text, bool addBos = false, bool addEos = false) => text.Select(c => (int)(c - 'a')).ToArray();
        public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) => string.Concat(ids.Select(i => (char)('a' + i % 26)));
        public int? TokenToId(string token) => null;
    }

    [Fact]
    public void TokenizerOverloadStopsOnTokenizerEosAndDecodesStopStrings()
    {
        using var model = Model();
        var free = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 8, StopTokenIds = Array.Empty<int>() });
        var ended = TextGenerator.Generate(model, new LetterTokenizer(free.TokenIds[3]), Prompt, new GenerationOptions { MaxNewTokens = 8 });
        Assert.Equal(FinishReason.EndOfSequence, ended.FinishReason);
        Assert.Equal(free.TokenIds.TakeWhile(t => t != free.TokenIds[3]).Count() + 1, ended.TokenIds.Count);

        var tokenizer = new LetterTokenizer(eos: 127);
        var stop = tokenizer.Decode(free.TokenIds.Skip(1).Take(2));
        var stopped = TextGenerator.Generate(model, tokenizer, Prompt, new GenerationOptions { MaxNewTokens = 8, StopStrings = new[] { stop } });
        Assert.Equal(FinishReason.StopString, stopped.FinishReason);
        Assert.Contains(stop, tokenizer.Decode(stopped.TokenIds));
    }

    [Fact]
    public void CancellationStopsAtOnce()
    {
        using var model = Model();
        using var cancel = new CancellationTokenSource();
        var result = TextGenerator.Generate(model, Prompt, new GenerationOptions { MaxNewTokens = 50, StopTokenIds = Array.Empty<int>() },
            onToken: _ => cancel.Cancel(), cancellationToken: cancel.Token);
        Assert.Equal(FinishReason.Cancelled, result.FinishReason);
        Assert.Single(result.TokenIds);
    }

    [Fact]
    public void DecodeFromEmbeddingsPrefillMatchesIds()
    {
        using var model = Model();
        var options = new GenerationOptions { MaxNewTokens = 6 };
        var fromIds = TextGenerator.Generate(model, Prompt, options);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var embeds = model.Embed(tensor(Prompt.Select(i => (long)i).ToArray()).unsqueeze(0));
        var fromEmbeds = TextGenerator.Decode(model, new CausalLMInput(InputsEmbeds: embeds), new[] { Prompt }, options);
        Assert.Equal(fromIds.TokenIds, fromEmbeds[0].TokenIds);
    }
}
