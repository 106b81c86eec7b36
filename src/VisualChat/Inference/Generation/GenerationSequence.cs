using System.Text;
using TorchSharp;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Inference.Generation;

/// <summary>One sequence in a <see cref="GenerationEngine"/>: its sampler (own seed), seen-id mask for the repetition
/// penalty, stop conditions, streamed text and result.</summary>
public sealed class GenerationSequence : IDisposable
{
    static readonly Scalar True = true.ToScalar();   // held: see TorchScalars

    readonly List<int> tokens = [];
    readonly StringBuilder text = new();
    readonly HashSet<int> stopIds;
    readonly Sampler sampler;
    readonly Tensor seen;   // [1, vocab] bool
    readonly IncrementalDetokenizer? detokenizer;
    readonly StopStringMatcher matcher;
    bool cancelRequested, disposed;

    internal GenerationSequence(GenerationRequest request, IReadOnlyList<int> stopIds, Func<IReadOnlyList<int>, string>? decode, int vocabSize)
    {
        Request = request;
        this.stopIds = [.. stopIds];
        sampler = new Sampler(request.Options);
        var logits = request.State.NextLogits!;
        var host = new bool[vocabSize];
        foreach (var id in request.State.History[0])
            if (id >= 0 && id < vocabSize) host[id] = true;
        seen = tensor(host, new long[] { 1, vocabSize }, device: logits.device);
        if (decode is not null) detokenizer = new IncrementalDetokenizer(decode, request.TextContext);
        matcher = new StopStringMatcher(request.Options.StopStrings);
    }

    public GenerationRequest Request { get; }
    public DecoderState State => Request.State;
    public GenerationOptions Options => Request.Options;
    public IReadOnlyList<int> TokenIds => tokens;
    /// <summary>The text emitted so far.</summary>
    public string Text => text.ToString();
    public bool IsFinished => Result is not null;
    /// <summary>Set once the sequence has left the engine.</summary>
    public GenerationResult? Result { get; private set; }

    /// <summary>Asks the engine to end the sequence before its next token (finish reason Cancelled).</summary>
    public void Cancel() => cancelRequested = true;

    internal bool CancellationRequested => cancelRequested || Request.CancellationToken.IsCancellationRequested;

    internal int Sample()
    {
        using var scope = NewDisposeScope();
        return (int)sampler.Sample(State.NextLogits!, seen).item<long>();
    }

    /// <summary>Records <paramref name="token"/>; returns true when it ends the sequence.</summary>
    internal bool Accept(int token)
    {
        tokens.Add(token);
        Request.OnToken?.Invoke(token);
        if (stopIds.Contains(token)) return Finish(FinishReason.EndOfSequence);
        if (detokenizer is not null) {
            Emit(matcher.Add(detokenizer.Add(token)));
            if (matcher.Found is not null) return Finish(FinishReason.StopString);
        }
        if (tokens.Count >= Options.MaxNewTokens) return Finish(FinishReason.Length);
        if (CancellationRequested) return Finish(FinishReason.Cancelled);
        if (token >= 0 && token < seen.shape[1]) {
            using var scope = NewDisposeScope();
            seen.narrow(1, token, 1).fill_(True);
        }
        return false;
    }

    internal bool Finish(FinishReason reason)
    {
        if (detokenizer is not null && reason != FinishReason.StopString) {
            Emit(matcher.Add(detokenizer.Flush()));
            if (matcher.Found is not null) reason = FinishReason.StopString;
            else Emit(matcher.Flush());
        }
        Result = new GenerationResult(tokens.ToArray(), reason, matcher.Found, detokenizer is null ? null : text.ToString());
        Dispose();
        return true;
    }

    void Emit(string delta)
    {
        if (delta.Length == 0) return;
        text.Append(delta);
        Request.OnText?.Invoke(delta);
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        sampler.Dispose();
        seen.Dispose();
    }
}
