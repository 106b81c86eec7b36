using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Model.Presets;
using VisualChat.Tests.Model;
using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Tests.Generation;

public class GenerationEngineTests
{
    static LlamaForCausalLM Lm()
    {
        var config = LlamaTestModels.Tiny();
        config.EosTokenId = System.Text.Json.Nodes.JsonValue.Create(2);
        config.MaxPositionEmbeddings = 64;
        return LlamaTestModels.ClosedFormModel(config);
    }

    /// <summary>A decoder that answers a fixed script, whatever the prompt: the k-th generated token is script[k].</summary>
    sealed class ScriptedDecoder(int vocabSize, IReadOnlyList<int> script) : ICausalDecoder
    {
        readonly Dictionary<DecoderState, int> promptLengths = [];
        public int OutputVocabSize => vocabSize;
        public IReadOnlyList<int> EosTokenIds => [2];
        public long MaxContext => 1024;
        public DecoderState CreateState(long capacity = 256) => new(1, capacity);

        public void Prefill(DecoderState state, DecoderPrompt prompt)
        {
            state.AddHistory(0, prompt.Ids);
            promptLengths[state] = state.History[0].Count;
            SetLogits(state);
        }

        public void Step(IReadOnlyList<DecoderState> states, IReadOnlyList<int> tokens)
        {
            for (int i = 0; i < states.Count; i++) {
                states[i].AddHistory(0, [tokens[i]]);
                SetLogits(states[i]);
            }
        }

        void SetLogits(DecoderState state)
        {
            int k = state.History[0].Count - promptLengths[state];
            var logits = zeros(1, vocabSize);
            logits[0, script[Math.Min(k, script.Count - 1)]] = tensor(10f);
            state.SetNextLogits(logits);
        }
    }

    static (List<string> Deltas, GenerationResult Result) Stream(ICausalDecoder decoder, ITokenizer tokenizer, GenerationOptions options, CancellationToken cancellationToken = default)
    {
        var deltas = new List<string>();
        using var state = decoder.CreateState();
        var result = new GenerationEngine(decoder, tokenizer).Generate(new GenerationRequest(state, new DecoderPrompt([1]), options) {
            OnText = deltas.Add, CancellationToken = cancellationToken,
        });
        return (deltas, result);
    }

    [Fact]
    public void SequencesJoiningAndLeavingMidBatchDecodeAsAlone()
    {
        using var model = Lm();
        int[][] prompts = [[1, 5, 77, 3], [1, 9], [1, 60, 61, 62, 63, 64], [1, 100, 42]];
        // Mixed settings: greedy, sampled with own seeds, a repetition penalty, different lengths (leave at different steps).
        GenerationOptions[] options = [
            new() { MaxNewTokens = 9, StopTokenIds = [] },
            new() { MaxNewTokens = 4, Temperature = 1.3, TopP = 0.9, Seed = 7, StopTokenIds = [] },
            new() { MaxNewTokens = 12, RepetitionPenalty = 5, StopTokenIds = [] },
            new() { MaxNewTokens = 6, Temperature = 0.8, TopK = 20, Seed = 11, StopTokenIds = [] },
        ];
        var alone = prompts.Select((p, i) => TextGenerator.Generate(model, p, options[i])).ToArray();

        var engine = new GenerationEngine(model);
        var states = prompts.Select(_ => ((ICausalDecoder)model).CreateState()).ToArray();
        try {
            var streamed = prompts.Select(_ => new List<int>()).ToArray();
            GenerationRequest Request(int i) => new(states[i], new DecoderPrompt(prompts[i]), options[i]) { OnToken = streamed[i].Add };
            var sequences = new GenerationSequence[4];
            sequences[0] = engine.Add(Request(0));
            engine.Step();
            engine.Step();
            sequences[1] = engine.Add(Request(1));                 // joins while 0 is mid-decode
            engine.Step();
            sequences[2] = engine.Add(Request(2));
            engine.Step();
            engine.Step();
            Assert.Equal(3, engine.Running.Count);
            sequences[3] = engine.Add(Request(3));
            for (int step = 0; step < 3; step++) engine.Step();
            Assert.True(sequences[1].IsFinished, "sequence 1 (4 tokens) has left");
            Assert.DoesNotContain(sequences[1], engine.Running);
            engine.RunToCompletion();
            Assert.Empty(engine.Running);
            for (int i = 0; i < prompts.Length; i++) {
                Assert.Equal(alone[i].TokenIds, sequences[i].Result!.TokenIds);
                Assert.Equal(alone[i].FinishReason, sequences[i].Result!.FinishReason);
                Assert.Equal(alone[i].TokenIds, streamed[i]);
            }
            Assert.Equal(options[0].MaxNewTokens, sequences[0].Result!.TokenIds.Count);
        } finally {
            foreach (var state in states) state.Dispose();
        }
    }

    [Fact]
    public void StopStringAcrossTokenBoundariesIsNotEmitted()
    {
        var tokenizer = TinyTokenizer.Build();
        var text = "cat sat on the mat";
        var ids = tokenizer.Encode(text);
        Assert.True(ids.Count >= 4);
        // "t on" starts inside one token and ends inside another.
        var decoder = new ScriptedDecoder(tokenizer.VocabSize, [.. ids, 2]);
        var (free, freeResult) = Stream(decoder, tokenizer, new GenerationOptions { MaxNewTokens = 50 });
        Assert.Equal(text, freeResult.Text);
        Assert.Equal(FinishReason.EndOfSequence, freeResult.FinishReason);
        Assert.Equal(text, string.Concat(free));

        var stop = "t on";
        Assert.DoesNotContain(ids, id => tokenizer.Decode([id]).Contains(stop));
        var (deltas, result) = Stream(decoder, tokenizer, new GenerationOptions { MaxNewTokens = 50, StopStrings = ["zzz", stop] });
        Assert.Equal(FinishReason.StopString, result.FinishReason);
        Assert.Equal(stop, result.StopString);
        Assert.Equal("cat sa", result.Text);
        Assert.Equal("cat sa", string.Concat(deltas));
        // It stops at the token that completed the stop string, not later.
        Assert.Contains("t on", tokenizer.Decode(result.TokenIds));
        Assert.DoesNotContain("t on", tokenizer.Decode(result.TokenIds.Take(result.TokenIds.Count - 1)));
    }

    [Fact]
    public void MultiByteCharacterSplitOverByteTokensStreamsWithoutReplacementCharacters()
    {
        var tokenizer = TinyTokenizer.Build();
        var text = "cat ✓ done é";
        var ids = tokenizer.Encode(text);
        Assert.True(ids.Count(id => tokenizer.IdToPiece(id).StartsWith("<0x", StringComparison.Ordinal)) >= 3, "✓ must be byte-fallback tokens for this test to mean anything");
        var decoder = new ScriptedDecoder(tokenizer.VocabSize, [.. ids, 2]);
        var (deltas, result) = Stream(decoder, tokenizer, new GenerationOptions { MaxNewTokens = 50 });
        Assert.Equal(text, result.Text);
        Assert.Equal(text, string.Concat(deltas));
        Assert.DoesNotContain(deltas, d => d.Contains('\uFFFD'));
        Assert.True(deltas.Count < ids.Count, "the incomplete bytes of ✓ must be held back, not emitted as empty or broken pieces");
    }

    [Fact]
    public void IncompleteCharacterAtTheEndIsFlushedAsDecodingGivesIt()
    {
        var tokenizer = TinyTokenizer.Build();
        var ids = tokenizer.Encode("ok ✓");
        var cut = ids.Take(ids.Count - 1).ToArray();   // the last byte of ✓ never comes
        var decoder = new ScriptedDecoder(tokenizer.VocabSize, cut);
        var (deltas, result) = Stream(decoder, tokenizer, new GenerationOptions { MaxNewTokens = cut.Length, StopTokenIds = [] });
        Assert.Equal(FinishReason.Length, result.FinishReason);
        Assert.Equal(tokenizer.Decode(cut), result.Text);
        Assert.Equal(result.Text, string.Concat(deltas));
    }

    [Fact]
    public void CancellationEndsOneSequenceAndLeavesTheOthers()
    {
        using var model = Lm();
        var options = new GenerationOptions { MaxNewTokens = 10, StopTokenIds = [] };
        var alone = TextGenerator.Generate(model, [1, 9], options);
        using var cancel = new CancellationTokenSource();
        var engine = new GenerationEngine(model);
        using var a = ((ICausalDecoder)model).CreateState();
        using var b = ((ICausalDecoder)model).CreateState();
        int seen = 0;
        var cancelled = engine.Add(new GenerationRequest(a, new DecoderPrompt([1, 5, 77, 3]), options) {
            CancellationToken = cancel.Token, OnToken = _ => { if (++seen == 3) cancel.Cancel(); },
        });
        var other = engine.Add(new GenerationRequest(b, new DecoderPrompt([1, 9]), options));
        engine.RunToCompletion();
        Assert.Equal(FinishReason.Cancelled, cancelled.Result!.FinishReason);
        Assert.Equal(3, cancelled.Result.TokenIds.Count);
        Assert.Equal(alone.TokenIds, other.Result!.TokenIds);

        // Cancelled before its first token: nothing is generated. Cancel() ends a sequence too.
        using var c = ((ICausalDecoder)model).CreateState();
        var early = engine.Add(new GenerationRequest(c, new DecoderPrompt([1, 9]), options) { CancellationToken = cancel.Token });
        engine.RunToCompletion();
        Assert.Empty(early.Result!.TokenIds);
        Assert.Equal(FinishReason.Cancelled, early.Result.FinishReason);
        using var d = ((ICausalDecoder)model).CreateState();
        var stopped = engine.Add(new GenerationRequest(d, new DecoderPrompt([1, 9]), options));
        engine.Step();
        stopped.Cancel();
        engine.Step();
        Assert.Equal(FinishReason.Cancelled, stopped.Result!.FinishReason);
        Assert.Equal(alone.TokenIds.Take(1), stopped.Result.TokenIds);
    }

    [Fact]
    public void KeepFinalTokenLeavesTheEndingTokenInTheCache()
    {
        using var model = Lm();
        var options = new GenerationOptions { MaxNewTokens = 3, StopTokenIds = [] };
        var engine = new GenerationEngine(model);
        using var kept = ((ICausalDecoder)model).CreateState();
        using var dropped = ((ICausalDecoder)model).CreateState();
        var a = engine.Generate(new GenerationRequest(kept, new DecoderPrompt([1, 9]), options) { KeepFinalToken = true });
        var b = engine.Generate(new GenerationRequest(dropped, new DecoderPrompt([1, 9]), options));
        Assert.Equal(a.TokenIds, b.TokenIds);
        Assert.Equal(2 + 3, kept.Length);
        Assert.Equal(2 + 2, dropped.Length);
        Assert.Equal([1, 9, .. a.TokenIds], kept.History[0]);
    }

    [Fact]
    public void StopStringsWithoutAWayToDecodeAreRefused()
    {
        using var model = Lm();
        using var state = ((ICausalDecoder)model).CreateState();
        var engine = new GenerationEngine(model);
        Assert.Throws<ArgumentException>(() => engine.Add(new GenerationRequest(state, new DecoderPrompt([1]), new GenerationOptions { StopStrings = ["x"] })));
        Assert.Throws<ArgumentException>(() => engine.Add(new GenerationRequest(state, null, new GenerationOptions())));
    }
}
