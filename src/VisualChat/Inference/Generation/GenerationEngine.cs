using VisualChat.Model;
using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Inference.Generation;

/// <summary>
/// The one decode loop: every sequence that generates (CLI generate, chat, eval, IChatClient, a server) runs here.
/// A sequence joins with <see cref="Add"/> (its prompt is prefilled then), every <see cref="Step"/> samples one token
/// per running sequence (its own seeded sampler and repetition penalty over its history), checks EOS / stop ids /
/// stop strings / max tokens / cancellation, streams its text and feeds the tokens through the decoder; a finished
/// sequence leaves at once. Sequences can therefore join and leave between any two steps: this is the seam for
/// continuous batching.
/// </summary>
/// <remarks>
/// Design: each sequence owns its <see cref="DecoderState"/> (its own KV cache), and <see cref="ICausalDecoder.Step"/>
/// receives all running states at once. Joining or leaving never moves another sequence's cache rows, and results
/// do not depend on what else runs (equal to running the sequence alone). Today's decoders forward each state on its
/// own; a decoder may later batch the states of one step into one forward without changing the engine.
/// Not thread-safe: one thread (a scheduler) calls <see cref="Add"/> and <see cref="Step"/>.
/// </remarks>
public sealed class GenerationEngine
{
    readonly ICausalDecoder decoder;
    readonly Func<IReadOnlyList<int>, string>? decode;
    readonly int[] defaultStopIds;
    readonly List<GenerationSequence> running = [];

    /// <summary>An engine that reads text (stop strings, streaming) with <paramref name="tokenizer"/>; unless a request
    /// names stop ids, the model's EOS ids and the tokenizer's EOS end a sequence.</summary>
    public GenerationEngine(ICausalDecoder decoder, ITokenizer tokenizer)
        : this(decoder, ids => tokenizer.Decode(ids), decoder.EosTokenIds.Append(tokenizer.EosId))
    {
    }

    /// <param name="decode">Ids → text for streaming and stop strings; null: ids only (stop strings are then refused).</param>
    /// <param name="defaultStopIds">Stop ids for requests that name none; null: the model's EOS ids.</param>
    public GenerationEngine(ICausalDecoder decoder, Func<IReadOnlyList<int>, string>? decode = null, IEnumerable<int>? defaultStopIds = null)
    {
        this.decoder = decoder;
        this.decode = decode;
        this.defaultStopIds = (defaultStopIds ?? decoder.EosTokenIds).Where(id => id >= 0).Distinct().ToArray();
    }

    public ICausalDecoder Decoder => decoder;
    /// <summary>Sequences that have joined and not yet finished.</summary>
    public IReadOnlyList<GenerationSequence> Running => running;

    /// <summary>Joins a sequence: prefills its prompt (when given) and lets it take part from the next <see cref="Step"/>.
    /// A request for 0 new tokens finishes at once (Length).</summary>
    public GenerationSequence Add(GenerationRequest request)
    {
        request.Options.Validate();
        if (request.Options.StopStrings.Count > 0 && decode is null)
            throw new ArgumentException("GenerationOptions.StopStrings need a decode delegate (or a tokenizer) to read the generated text.", nameof(request));
        if (request.State.BatchSize != 1)
            throw new ArgumentException($"A generation sequence is one row; the state has {request.State.BatchSize} rows. Create one state per sequence.", nameof(request));
        if (running.Any(s => ReferenceEquals(s.State, request.State)))
            throw new ArgumentException("This state is already decoding in the engine; a state belongs to one sequence at a time.", nameof(request));
        if (request.Prompt is { } prompt) decoder.Prefill(request.State, prompt);
        else if (request.State.NextLogits is null)
            throw new ArgumentException("The state holds no prompt yet: give GenerationRequest.Prompt.", nameof(request));
        var sequence = new GenerationSequence(request, request.Options.StopTokenIds ?? defaultStopIds, decode, decoder.OutputVocabSize);
        if (request.Options.MaxNewTokens == 0) sequence.Finish(FinishReason.Length);
        else running.Add(sequence);
        return sequence;
    }

    /// <summary>One token for every running sequence. Returns how many are still running.</summary>
    public int Step()
    {
        if (running.Count == 0) return 0;
        using var noGrad = no_grad();
        var feedStates = new List<DecoderState>(running.Count);
        var feedTokens = new List<int>(running.Count);
        for (int i = 0; i < running.Count; i++) {
            var sequence = running[i];
            if (sequence.CancellationRequested) {
                sequence.Finish(FinishReason.Cancelled);
                continue;
            }
            int token = sequence.Sample();
            bool finished = sequence.Accept(token);
            // The token joins the cache unless the sequence ended and nobody continues it.
            if (!finished || sequence.Request.KeepFinalToken) {
                feedStates.Add(sequence.State);
                feedTokens.Add(token);
            }
        }
        running.RemoveAll(s => s.IsFinished);
        if (feedStates.Count > 0) decoder.Step(feedStates, feedTokens);
        return running.Count;
    }

    /// <summary>Steps until no sequence runs.</summary>
    public void RunToCompletion()
    {
        while (Step() > 0) { }
    }

    /// <summary>Adds one sequence and steps until it finishes (other running sequences advance alongside).</summary>
    public GenerationResult Generate(GenerationRequest request)
    {
        var sequence = Add(request);
        while (!sequence.IsFinished) Step();
        return sequence.Result!;
    }

    /// <summary>Generates for each request as one running batch; results in request order.</summary>
    public IReadOnlyList<GenerationResult> Generate(IReadOnlyList<GenerationRequest> requests)
    {
        var sequences = requests.Select(Add).ToArray();
        while (sequences.Any(s => !s.IsFinished)) Step();
        return sequences.Select(s => s.Result!).ToArray();
    }
}
