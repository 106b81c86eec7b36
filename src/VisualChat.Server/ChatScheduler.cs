using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Server;

/// <summary>What a request's handler hears from the scheduler, in order: text deltas, then one end.</summary>
public abstract record JobEvent;
/// <summary>The sequence sampled its first token (its text may follow later: the detokenizer holds incomplete UTF-8).</summary>
public sealed record JobStarted : JobEvent;
public sealed record JobDelta(string Text) : JobEvent;
public sealed record JobFinished(GenerationResult Result, long PromptTokens, long ReusedPositions) : JobEvent;
public sealed record JobFailed(ApiException Error) : JobEvent;

/// <summary>One chat completion in the scheduler: its prompt chunks, decoding options and where its events go.</summary>
public sealed class ChatJob(ConversationPrompt prompt, GenerationOptions options, CancellationToken cancellationToken)
{
    public ConversationPrompt Prompt { get; } = prompt;
    public GenerationOptions Options { get; } = options;
    public CancellationToken CancellationToken { get; } = cancellationToken;
    public Channel<JobEvent> Events { get; } = Channel.CreateUnbounded<JobEvent>(new UnboundedChannelOptions { SingleWriter = true, SingleReader = true });
    internal long Arrived { get; } = Stopwatch.GetTimestamp();

    internal VisualChatConversationState? State;
    internal int NextChunk, ReusedChunks, ReusedAnswerIds;
    internal long ReusedPositions, PromptEnd, LastToken;
    internal int HistoryEnd;
    internal Tensor? PromptLogits;
    internal GenerationSequence? Sequence;
}

/// <summary>
/// Continuous batching on one thread that owns the model: requests join between decode steps and leave as soon as they
/// end. Each loop prefills one prompt chunk (one round) of one newcomer, then runs one <see cref="GenerationEngine.Step"/>
/// for every decoding sequence, so a long prompt delays running streams by at most one chunk per token. A newcomer first
/// takes the cached state of its conversation's longest known prefix (<see cref="ConversationCache"/>) and prefills only
/// the rest; when it ends, its state (prompt and the answer's fed-back ids) is kept for the conversation's next turn.
/// </summary>
public sealed class ChatScheduler : IDisposable
{
    readonly VisualChatModel model;
    readonly VisualChatProcessor processor;
    readonly ServerMetrics metrics;
    readonly ConversationCache cache;
    readonly int maxBatch, maxQueue;
    readonly ConcurrentQueue<ChatJob> incoming = new();
    readonly List<ChatJob> active = [];
    readonly SemaphoreSlim wake = new(0);
    readonly Thread thread;
    GenerationEngine engine;
    int inSystem;
    volatile bool stopping;

    /// <summary>For tests: when set, each scheduler iteration waits for a permit, so a test decides when steps happen.</summary>
    internal SemaphoreSlim? StepPermits { get; set; }

    public ChatScheduler(VisualChatModel model, VisualChatProcessor processor, ServerMetrics metrics, int maxBatch, int maxQueue, long kvCacheBytes)
    {
        this.model = model;
        this.processor = processor;
        this.metrics = metrics;
        this.maxBatch = maxBatch;
        this.maxQueue = maxQueue;
        var lm = model.LmConfig;
        long bytesPerPosition = 2L * lm.NumHiddenLayers * lm.KeyValueHeads * lm.HeadDim * sizeof(float);
        cache = new ConversationCache(kvCacheBytes, bytesPerPosition);
        engine = new GenerationEngine(model, processor.Tokenizer);
        thread = new Thread(Run) { IsBackground = true, Name = "vchat-scheduler" };
        thread.Start();
    }

    /// <summary>Queues <paramref name="job"/>; false when the batch and the queue are full (the caller answers 429).</summary>
    public bool TryEnqueue(ChatJob job)
    {
        if (Interlocked.Increment(ref inSystem) > maxBatch + maxQueue) {
            Interlocked.Decrement(ref inSystem);
            return false;
        }
        incoming.Enqueue(job);
        Interlocked.Increment(ref metrics.QueueDepth);
        wake.Release();
        return true;
    }

    void Run()
    {
        while (!stopping) {
            if (StepPermits is { } permits && !permits.Wait(50)) continue;
            try {
                Admit();
                var newcomer = active.FirstOrDefault(j => j.Sequence is null);
                if (newcomer is not null) PrefillOne(newcomer);
                if (engine.Running.Count > 0) {
                    metrics.BatchSize.Observe(engine.Running.Count);
                    try {
                        engine.Step();
                    } catch (Exception e) {
                        // A failed step leaves every running sequence's state unknown: end them all and start afresh.
                        foreach (var job in active.Where(j => j.Sequence is not null).ToList())
                            Fail(job, new ApiException(500, $"Decoding failed: {e.Message}", "server_error"));
                        engine = new GenerationEngine(model, processor.Tokenizer);
                    }
                }
                foreach (var job in active.Where(j => j.Sequence?.IsFinished == true).ToList()) Complete(job);
                metrics.CacheEntries = cache.Count;
                if (model.FeatureCache is { } features) {
                    Interlocked.Exchange(ref metrics.ImageFeatureHits, features.Hits);
                    Interlocked.Exchange(ref metrics.ImageFeatureMisses, features.Misses);
                }
                Interlocked.Exchange(ref metrics.CacheBytes, cache.UsedBytes);
                Interlocked.Exchange(ref metrics.CacheEvictions, cache.Evictions);
                if (active.Count == 0) wake.Wait(TimeSpan.FromMilliseconds(200));
            } catch (Exception e) when (!stopping) {
                Console.Error.WriteLine($"vchat serve: scheduler error: {e}");
            }
        }
    }

    void Admit()
    {
        while (active.Count < maxBatch && incoming.TryDequeue(out var job)) {
            Interlocked.Decrement(ref metrics.QueueDepth);
            active.Add(job);
            metrics.Running = active.Count;
            var (state, chunks, answerIds) = cache.Take(job.Prompt.Chunks);
            job.State = state ?? model.CreateConversation(1, Math.Min(Math.Max(512, job.Prompt.Positions + job.Options.MaxNewTokens), model.MaxContext));
            job.NextChunk = job.ReusedChunks = chunks;
            job.ReusedAnswerIds = answerIds;
            job.ReusedPositions = job.Prompt.Chunks.Take(chunks).Sum(c => c.Positions) + answerIds;
            metrics.Reuse(job.Prompt.Chunks.Count, chunks, job.Prompt.Positions, job.ReusedPositions,
                job.Prompt.Chunks.Sum(c => c.Images.Count), job.Prompt.Chunks.Take(chunks).Sum(c => c.Images.Count));
        }
    }

    void PrefillOne(ChatJob job)
    {
        if (job.CancellationToken.IsCancellationRequested) {
            metrics.Cancelled();
            Leave(job, keepState: true);
            job.Events.Writer.TryComplete();
            return;
        }
        try {
            if (job.NextChunk < job.Prompt.Chunks.Count) {
                var chunk = job.Prompt.Chunks[job.NextChunk];
                // The first chunk after a cached prefix may begin with the cached answer's ids, already in the state.
                int skip = job.NextChunk == job.ReusedChunks ? job.ReusedAnswerIds : 0;
                using (var pixels = processor.Pixels(chunk.Images))
                    model.Append(job.State!, skip == 0 ? chunk.Ids : chunk.Ids[skip..], pixels);
                job.NextChunk++;
                if (job.NextChunk < job.Prompt.Chunks.Count) return;
            }
            var state = job.State!;
            // Reused chunks, a reused answer and prefilled chunks must add up to the prompt, or the model would read a
            // different conversation than the client sent.
            if (state.Length != job.Prompt.Positions)
                throw new ApiException(500, $"The conversation state holds {state.Length} positions for a prompt of {job.Prompt.Positions}; the request was not run.", "server_error");
            job.PromptEnd = state.Length;
            job.HistoryEnd = state.History[0].Count;
            using (no_grad()) job.PromptLogits = state.NextLogits!.clone().DetachFromDisposeScope();
            job.LastToken = Stopwatch.GetTimestamp();
            job.Sequence = engine.Add(new GenerationRequest(state, null, job.Options) {
                CancellationToken = job.CancellationToken,
                OnText = text => job.Events.Writer.TryWrite(new JobDelta(text)),
                OnToken = _ => {
                    long now = Stopwatch.GetTimestamp();
                    if (job.Sequence is null || job.Sequence.TokenIds.Count <= 1) {
                        metrics.TimeToFirstToken.Observe(Stopwatch.GetElapsedTime(job.Arrived, now).TotalSeconds);
                        job.Events.Writer.TryWrite(new JobStarted());
                    } else
                    {
                        metrics.InterTokenLatency.Observe(Stopwatch.GetElapsedTime(job.LastToken, now).TotalSeconds);
                    }

                    job.LastToken = now;
                },
            });
        } catch (Exception e) {
            var error = e as ApiException ?? (e is ArgumentException or InvalidOperationException
                ? ApiException.BadRequest(e.Message, "messages")
                : new ApiException(500, $"Prefill failed: {e.Message}", "server_error"));
            Fail(job, error);
        }
    }

    void Complete(ChatJob job)
    {
        var result = job.Sequence!.Result!;
        if (result.FinishReason == FinishReason.Cancelled) metrics.Cancelled();
        metrics.Tokens(job.Prompt.Positions, result.TokenIds.Count);
        job.Events.Writer.TryWrite(new JobFinished(result, job.Prompt.Positions, job.ReusedPositions));
        job.Events.Writer.TryComplete();
        Leave(job, keepState: true);
    }

    void Fail(ChatJob job, ApiException error)
    {
        job.Events.Writer.TryWrite(new JobFailed(error));
        job.Events.Writer.TryComplete();
        Leave(job, keepState: false);
    }

    /// <summary>Takes <paramref name="job"/> out of the batch; its state goes back to the cache (after decoding: its
    /// prompt and the answer's fed-back ids; cancelled during prefill: the whole chunks it holds), or is freed.</summary>
    void Leave(ChatJob job, bool keepState)
    {
        active.Remove(job);
        metrics.Running = active.Count;
        Interlocked.Decrement(ref inSystem);
        job.Sequence?.Dispose();
        var state = job.State;
        job.State = null;
        if (state is null) return;
        string? key = keepState && job.NextChunk > 0 && cache.BudgetBytes > 0 ? job.Prompt.Chunks[job.NextChunk - 1].Key : null;
        if (key is not null && job.PromptLogits is { } logits) {
            int fed = (int)(state.Length - job.PromptEnd);
            cache.Put(key, new CachedTurn(state, job.PromptEnd, job.HistoryEnd, logits, [.. job.Sequence!.TokenIds.Take(fed)]));
            job.PromptLogits = null;
        } else if (key is not null && state.NextLogits is not null) {
            // Cancelled during prefill at a chunk boundary (a state taken with part of an answer has no logits until
            // the rest of its chunk is appended, so it is dropped instead).
            Tensor promptLogits;
            using (no_grad()) promptLogits = state.NextLogits.clone().DetachFromDisposeScope();
            cache.Put(key, new CachedTurn(state, state.Length, state.History[0].Count, promptLogits, []));
        } else {
            state.Dispose();
        }
        job.PromptLogits?.Dispose();
    }

    public void Dispose()
    {
        stopping = true;
        wake.Release();
        thread.Join(TimeSpan.FromSeconds(30));
        foreach (var job in active.ToList()) Fail(job, new ApiException(503, "The server is shutting down.", "server_error"));
        while (incoming.TryDequeue(out var job)) {
            job.Events.Writer.TryWrite(new JobFailed(new ApiException(503, "The server is shutting down.", "server_error")));
            job.Events.Writer.TryComplete();
        }
        cache.Dispose();
        wake.Dispose();
    }
}
