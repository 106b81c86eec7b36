using VisualChat.Inference.Generation;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Generation;

/// <summary>The engine's bookkeeping that a Stryker run of GenerationEngine and GenerationSequence found untested: stop
/// id 0, invalid options and misused states refused at Add, empty batches never stepped, several requests each run to
/// their own end, a result without a decoder of text, and the repetition penalty reaching token 0.</summary>
public class GenerationEngineEdgeTests
{
    /// <summary>Every step returns the same logits; records the batch size of every Step call.</summary>
    sealed class ConstantDecoder(float[] logits) : ICausalDecoder
    {
        public List<int> StepSizes { get; } = [];
        public int OutputVocabSize => logits.Length;
        public IReadOnlyList<int> EosTokenIds => [2];
        public long MaxContext => 1024;
        public DecoderState CreateState(long capacity = 256) => new(1, capacity);

        public void Prefill(DecoderState state, DecoderPrompt prompt)
        {
            state.AddHistory(0, prompt.Ids);
            state.SetNextLogits(tensor(logits).unsqueeze(0));
        }

        public void Step(IReadOnlyList<DecoderState> states, IReadOnlyList<int> tokens)
        {
            StepSizes.Add(states.Count);
            for (int i = 0; i < states.Count; i++) {
                states[i].AddHistory(0, [tokens[i]]);
                states[i].SetNextLogits(tensor(logits).unsqueeze(0));
            }
        }
    }

    static float[] Logits(int vocab, params (int Id, float Value)[] set)
    {
        var logits = new float[vocab];
        foreach (var (id, value) in set) logits[id] = value;
        return logits;
    }

    [Fact]
    public void ADefaultStopIdOfZeroEndsTheSequence_NegativeIdsAreIgnored()
    {
        var decoder = new ConstantDecoder(Logits(8, (0, 5f)));
        using var state = decoder.CreateState();
        var result = new GenerationEngine(decoder, defaultStopIds: [-1, 0]).Generate(
            new GenerationRequest(state, new DecoderPrompt([5]), new GenerationOptions { MaxNewTokens = 4 }));
        Assert.Equal([0], result.TokenIds);
        Assert.Equal(FinishReason.EndOfSequence, result.FinishReason);
    }

    [Fact]
    public void AddRefusesInvalidOptions_ARowBatch_AndAStateAlreadyDecoding()
    {
        var decoder = new ConstantDecoder(Logits(8, (3, 5f)));
        var engine = new GenerationEngine(decoder);
        using var state = decoder.CreateState();
        Assert.Throws<ArgumentOutOfRangeException>(() => engine.Add(new GenerationRequest(state, new DecoderPrompt([5]), new GenerationOptions { RepetitionPenalty = 0 })));
        Assert.Empty(state.History[0]);   // refused before the prompt was prefilled
        using var twoRows = new DecoderState(1, 16, batchSize: 2);
        var rows = Assert.Throws<ArgumentException>(() => engine.Add(new GenerationRequest(twoRows, new DecoderPrompt([5]), new GenerationOptions())));
        Assert.Contains("2 rows", rows.Message);
        engine.Add(new GenerationRequest(state, new DecoderPrompt([5]), new GenerationOptions { MaxNewTokens = 3, StopTokenIds = [] }));
        var twice = Assert.Throws<ArgumentException>(() => engine.Add(new GenerationRequest(state, null, new GenerationOptions())));
        Assert.Contains("already decoding", twice.Message);
    }

    [Fact]
    public void SeveralRequestsRunEachToItsOwnEnd_AndNoStepIsEmpty()
    {
        var decoder = new ConstantDecoder(Logits(8, (3, 5f)));
        using var shorter = decoder.CreateState();
        using var longer = decoder.CreateState();
        var results = new GenerationEngine(decoder).Generate([
            new GenerationRequest(shorter, new DecoderPrompt([5]), new GenerationOptions { MaxNewTokens = 2, StopTokenIds = [] }),
            new GenerationRequest(longer, new DecoderPrompt([5]), new GenerationOptions { MaxNewTokens = 5, StopTokenIds = [] }),
        ]);
        Assert.Equal([2, 5], results.Select(r => r.TokenIds.Count));
        // The final tokens are not fed: 4 steps in all, the first with both sequences; never an empty batch.
        Assert.Equal([2, 1, 1, 1], decoder.StepSizes);
    }

    [Fact]
    public void WithoutADecoderOfTextTheResultHasNoText()
    {
        var decoder = new ConstantDecoder(Logits(8, (3, 5f)));
        using var state = decoder.CreateState();
        var result = new GenerationEngine(decoder).Generate(new GenerationRequest(state, new DecoderPrompt([5]), new GenerationOptions { MaxNewTokens = 2, StopTokenIds = [] }));
        Assert.Null(result.Text);
        Assert.Equal([3, 3], result.TokenIds);
    }

    [Fact]
    public void TheRepetitionPenaltyReachesGeneratedTokenZero()
    {
        // Token 0 leads token 1 by 9 to 8; once generated, its penalised 4.5 loses to token 1.
        var decoder = new ConstantDecoder(Logits(8, (0, 9f), (1, 8f)));
        using var state = decoder.CreateState();
        var result = new GenerationEngine(decoder).Generate(new GenerationRequest(state, new DecoderPrompt([5]),
            new GenerationOptions { MaxNewTokens = 2, RepetitionPenalty = 2, StopTokenIds = [] }));
        Assert.Equal([0, 1], result.TokenIds);
    }

    [Fact]
    public void TheRepetitionPenaltyReachesPromptTokenZero()
    {
        var decoder = new ConstantDecoder(Logits(8, (0, 9f), (1, 8f)));
        using var state = decoder.CreateState();
        var result = new GenerationEngine(decoder).Generate(new GenerationRequest(state, new DecoderPrompt([0]),
            new GenerationOptions { MaxNewTokens = 1, RepetitionPenalty = 2, StopTokenIds = [] }));
        Assert.Equal([1], result.TokenIds);
    }

    /// <summary>Text held back because it could begin a stop string is emitted when the sequence ends otherwise.</summary>
    [Fact]
    public void ATailThatCouldStartAStopStringIsEmittedAtTheEnd()
    {
        var decoder = new ConstantDecoder(Logits(8, (3, 5f)));
        using var state = decoder.CreateState();
        var deltas = new List<string>();
        var engine = new GenerationEngine(decoder, ids => string.Concat(ids.Select(id => id == 3 ? "x" : "?")));
        var result = engine.Generate(new GenerationRequest(state, new DecoderPrompt([5]),
            new GenerationOptions { MaxNewTokens = 2, StopTokenIds = [], StopStrings = ["xxx"] }) { OnText = deltas.Add });
        Assert.Equal(FinishReason.Length, result.FinishReason);
        Assert.Equal("xx", result.Text);
        Assert.Equal("xx", string.Concat(deltas));
    }
}
