using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Model.Presets;
using VisualChat.Tests.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Generation;

/// <summary>TextGenerator's own code around the engine (argument checks, the state size it asks for, splitting a masked
/// prefill into sequences, the tokenizer overload's callbacks) and GenerationOptions' validation: what a mutation run
/// of both files left alive (docs/mutation-testing.md).</summary>
public class TextGeneratorEdgeTests
{
    static LlamaForCausalLM Lm()
    {
        var config = LlamaTestModels.Tiny();
        config.EosTokenId = System.Text.Json.Nodes.JsonValue.Create(2);
        config.MaxPositionEmbeddings = 64;
        return LlamaTestModels.ClosedFormModel(config);
    }

    static readonly GenerationOptions NoEos = new() { MaxNewTokens = 6, StopTokenIds = [] };

    /// <summary>The real model, recording the capacity of every state it is asked for.</summary>
    sealed class CapacitySpy(ICausalDecoder inner) : ICausalDecoder
    {
        public readonly List<long> Capacities = [];
        public int OutputVocabSize => inner.OutputVocabSize;
        public IReadOnlyList<int> EosTokenIds => inner.EosTokenIds;
        public long MaxContext => inner.MaxContext;
        public DecoderState CreateState(long capacity = 256) { Capacities.Add(capacity); return inner.CreateState(capacity); }
        public void Prefill(DecoderState state, DecoderPrompt prompt) => inner.Prefill(state, prompt);
        public void Step(IReadOnlyList<DecoderState> states, IReadOnlyList<int> tokens) => inner.Step(states, tokens);
    }

    [Theory]
    [InlineData("MaxNewTokens")]
    [InlineData("Temperature")]
    [InlineData("TopK")]
    [InlineData("TopP")]
    [InlineData("TopPAboveOne")]
    [InlineData("RepetitionPenalty")]
    [InlineData("StopStrings")]
    public void OptionsOutsideTheirRangesAreRefused_NamingTheOption(string which)
    {
        var options = which switch {
            "MaxNewTokens" => new GenerationOptions { MaxNewTokens = -1 },
            "Temperature" => new GenerationOptions { Temperature = double.NaN },
            "TopK" => new GenerationOptions { TopK = -1 },
            "TopP" => new GenerationOptions { TopP = 0 },
            "TopPAboveOne" => new GenerationOptions { TopP = 1.0001 },
            "RepetitionPenalty" => new GenerationOptions { RepetitionPenalty = 0 },
            _ => new GenerationOptions { StopStrings = ["###", ""] },
        };
        var error = Assert.ThrowsAny<ArgumentException>(options.Validate);
        Assert.Equal(which == "TopPAboveOne" ? "TopP" : which, error.ParamName);
    }

    [Fact]
    public void TheEdgesOfEachRangeAreAccepted()
    {
        new GenerationOptions { MaxNewTokens = 0, Temperature = 0, TopK = 0, TopP = 1, RepetitionPenalty = 1e-6, StopStrings = ["x"] }.Validate();
        new GenerationOptions { TopP = 1e-9 }.Validate();
    }

    [Fact]
    public void EachSequenceGetsAStateSizedForItsPromptAndEveryNewToken()
    {
        using var model = Lm();
        var spy = new CapacitySpy(model);
        TextGenerator.Generate(spy, [1, 5, 77, 3, 9], NoEos with { MaxNewTokens = 7 });
        TextGenerator.GenerateBatch(spy, [[1, 9], [1, 5, 77]], NoEos with { MaxNewTokens = 0 });
        TextGenerator.Generate(spy, TinyTokenizer.Build(), [1, 5, 77], NoEos with { MaxNewTokens = 4 });
        // prompt + new tokens, and at least one position for the token a zero-token request still samples.
        Assert.Equal([12L, 3, 4, 7], spy.Capacities);
    }

    [Fact]
    public void EmptyBatchesAndMismatchedSeenIdsAreRefused()
    {
        using var model = Lm();
        Assert.Equal("prompts", Assert.Throws<ArgumentException>(() => TextGenerator.GenerateBatch(model, [], NoEos)).ParamName);
        using var scope = NewDisposeScope();
        var prefill = new CausalLMInput(InputIds: tensor(new long[] { 1, 5, 77 }).view(1, 3));
        Assert.Equal("seenIds", Assert.Throws<ArgumentException>(() => TextGenerator.Decode(model, prefill, [[1], [2]], NoEos)).ParamName);
        Assert.Equal("prefill", Assert.Throws<ArgumentException>(() => TextGenerator.Decode(model, new CausalLMInput(), [[1]], NoEos)).ParamName);
    }

    [Fact]
    public void DecodingAMaskedPrefillDropsThePaddingOfEachRow()
    {
        using var model = Lm();
        using var scope = NewDisposeScope();
        int[] shortRow = [1, 9, 30], longRow = [1, 5, 77, 3, 100];
        var ids = tensor(new long[] { 0, 0, 1, 9, 30, 1, 5, 77, 3, 100 }).view(2, 5);
        var mask = tensor(new long[] { 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 }).view(2, 5);
        var results = TextGenerator.Decode(model, new CausalLMInput(InputIds: ids, AttentionMask: mask), [shortRow, longRow], NoEos);
        Assert.Equal(TextGenerator.Generate(model, shortRow, NoEos).TokenIds, results[0].TokenIds);
        Assert.Equal(TextGenerator.Generate(model, longRow, NoEos).TokenIds, results[1].TokenIds);

        // A mask that also covers earlier (cached) positions: its last columns belong to the prompt.
        var wideMask = tensor(new long[] { 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }).view(2, 7);
        var wide = TextGenerator.Decode(model, new CausalLMInput(InputIds: ids, AttentionMask: wideMask), [shortRow, longRow], NoEos);
        Assert.Equal(results.Select(r => r.TokenIds), wide.Select(r => r.TokenIds));
    }

    [Fact]
    public void TheTokenizerOverloadStreamsTokensAndTextAndHonoursCancellation()
    {
        using var model = Lm();
        var tokenizer = TinyTokenizer.Build();
        int[] prompt = [1, 5, 77];   // ids within the tiny model's 128-row vocabulary
        var tokens = new List<int>();
        var text = new List<string>();
        var result = TextGenerator.Generate(model, tokenizer, prompt, NoEos, onToken: tokens.Add, onText: text.Add);
        Assert.Equal(result.TokenIds, tokens);
        Assert.Equal(6, tokens.Count);
        Assert.Equal(result.Text, string.Concat(text));

        using var cancel = new CancellationTokenSource();
        cancel.Cancel();
        var cancelled = TextGenerator.Generate(model, tokenizer, prompt, NoEos, cancellationToken: cancel.Token);
        Assert.Equal(FinishReason.Cancelled, cancelled.FinishReason);
        Assert.True(cancelled.TokenIds.Count < 6);
    }
}
