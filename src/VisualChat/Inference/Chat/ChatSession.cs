using System.Text;
using VisualChat.Conversations;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Inference.Chat;

/// <summary>The next round would not fit in the model's context (LLaMA max_position_embeddings).</summary>
public sealed class ContextFullException(long needed, long maxContext)
    : InvalidOperationException($"The conversation is full: the next round needs {needed} positions but the model's context holds {maxContext} (max_position_embeddings).")
{
    public long Needed { get; } = needed;
    public long MaxContext { get; } = maxContext;
}

/// <summary>How long an answer took: until its first token (prompt and new images included) and in all.</summary>
public sealed record AnswerTiming(TimeSpan TimeToFirstToken, TimeSpan Total, int Tokens)
{
    /// <summary>Tokens after the first per second of decoding.</summary>
    public double DecodeTokensPerSecond => Tokens > 1 && Total > TimeToFirstToken ? (Tokens - 1) / (Total - TimeToFirstToken).TotalSeconds : 0;
}

/// <summary>An image of the conversation: its number (counted across the conversation, as "### Image k:" shows it),
/// where it came from, and whether it still waits for the next question.</summary>
public sealed record ChatImage(int Number, string Source, bool Pending);

/// <summary>
/// One interactive conversation with a <see cref="VisualChatModel"/>: images attach to the next question; each question
/// appends only its own round to the conversation's KV cache, so earlier images and turns are never recomputed.
/// </summary>
public sealed class ChatSession : IDisposable
{
    static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(30) };

    readonly VisualChatModel model;
    readonly VisualChatProcessor processor;
    readonly GenerationEngine engine;
    readonly List<ChatTranscriptRound> rounds = [];
    readonly List<(string Source, RgbImage Image)> pending = [];
    VisualChatConversationState state;
    bool lastAnswerLacksEos;
    string? systemPrompt;

    /// <param name="processor">Tokenizer, template and image preprocessing (e.g. <see cref="VisualChatProcessor.Load"/> of
    /// the model folder); null: <see cref="VisualChatProcessor.From"/> the model.</param>
    public ChatSession(VisualChatModel model, string? modelName = null, string? systemPrompt = null, VisualChatProcessor? processor = null)
    {
        this.model = model;
        this.processor = processor ?? VisualChatProcessor.From(model);
        engine = new GenerationEngine(model, this.processor.Tokenizer);
        ModelName = modelName;
        this.systemPrompt = systemPrompt;
        state = NewState();
    }

    public VisualChatModel Model => model;
    public VisualChatProcessor Processor => processor;
    public string? ModelName { get; }
    public GenerationOptions Parameters { get; set; } = new();
    public long MaxContext => model.LmConfig.MaxPositionEmbeddings;
    /// <summary>Positions the conversation holds in the cache.</summary>
    public long ContextLength => state.Length;
    /// <summary>Every token id in the conversation's cache so far: each round's prompt (image placeholders, and an EOS in
    /// front when the previous answer lacked one) and each answer with the token that ended it.</summary>
    public IReadOnlyList<int> ConversationIds => state.History[0];
    /// <summary>The system prompt in use: the one given, else the model folder's.</summary>
    public string? SystemPrompt => systemPrompt ?? processor.TemplateOptions.SystemPrompt;
    public IReadOnlyList<ChatTranscriptRound> Rounds => rounds;
    /// <summary>Prompt processing and decoding times of the last answer.</summary>
    public AnswerTiming? LastTiming { get; private set; }
    /// <summary>Why the last answer ended.</summary>
    public FinishReason? LastFinishReason { get; private set; }

    public IReadOnlyList<ChatImage> Images
    {
        get
        {
            var list = new List<ChatImage>();
            foreach (var source in rounds.SelectMany(r => r.Images)) list.Add(new ChatImage(list.Count + 1, source, false));
            foreach (var (source, _) in pending) list.Add(new ChatImage(list.Count + 1, source, true));
            return list;
        }
    }

    VisualChatConversationState NewState() => model.CreateConversation(1, Math.Min(512, MaxContext));

    /// <summary>Attaches an image (file path, file:// or http(s) URL, or data URI) to the next question. Decodes it now so
    /// a bad image is reported before the question is asked.</summary>
    public ChatImage AddImage(string pathOrUrlOrDataUri) => AddDecoded(pathOrUrlOrDataUri, LoadImage(pathOrUrlOrDataUri));

    public ChatImage AddImage(byte[] bytes, string name) => AddDecoded(name, ImageLoader.Load(bytes, name));

    internal ChatImage AddDecoded(string source, RgbImage image)
    {
        pending.Add((source, image));
        return Images[^1];
    }

    public static RgbImage LoadImage(string source, CancellationToken cancellationToken = default)
    {
        if (source.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || source.StartsWith("https://", StringComparison.OrdinalIgnoreCase)) {
            byte[] bytes;
            try { bytes = Http.GetByteArrayAsync(source, cancellationToken).GetAwaiter().GetResult(); }
            catch (TaskCanceledException e) when (!cancellationToken.IsCancellationRequested) {
                throw new IOException($"Downloading image '{source}' timed out after {Http.Timeout.TotalSeconds:0} s.", e);
            }
            catch (HttpRequestException e) { throw new IOException($"Cannot download image '{source}': {e.Message}", e); }
            return ImageLoader.Load(bytes, source);
        }
        if (source.StartsWith("file://", StringComparison.OrdinalIgnoreCase))
            return ImageLoader.Load(new Uri(source).LocalPath);
        return ImageLoader.LoadPathOrDataUri(source);
    }

    /// <summary>Asks a question about the conversation so far (and the images attached since the last question);
    /// <paramref name="onTextDelta"/> receives the answer as it grows. Throws <see cref="ContextFullException"/>
    /// (leaving the conversation as it was) when the round does not fit.</summary>
    public string Ask(string question, Action<string>? onTextDelta = null, CancellationToken cancellationToken = default)
    {
        if (string.IsNullOrWhiteSpace(question)) throw new ArgumentException("The question is empty.", nameof(question));
        var round = new ChatTranscriptRound { Images = pending.Select(p => p.Source).ToList(), Question = question };
        var ids = processor.RoundIds(ToConversation([.. rounds, round]), lastAnswerLacksEos, SystemPrompt);
        long promptLength = model.PromptPositions(ids.Length, pending.Count);
        long room = MaxContext - state.Length - promptLength;
        if (room < 1) throw new ContextFullException(state.Length + promptLength + 1, MaxContext);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        TimeSpan? firstToken = null;
        var options = Parameters with { MaxNewTokens = (int)Math.Min(Parameters.MaxNewTokens, room) };
        GenerationResult result;
        using (var pixels = processor.Pixels(pending.Select(p => p.Image).ToList())) {
            pending.Clear();
            // The answer's last token stays in the cache: the next round continues after it.
            result = engine.Generate(new GenerationRequest(state, new DecoderPrompt(ids, pixels), options) {
                OnToken = _ => firstToken ??= clock.Elapsed, OnText = onTextDelta, CancellationToken = cancellationToken, KeepFinalToken = true,
            });
        }
        var answer = result.Text ?? "";
        round.Answer = answer;
        round.AnswerIds = result.TokenIds.ToList();
        rounds.Add(round);
        lastAnswerLacksEos = result.FinishReason != FinishReason.EndOfSequence;
        LastFinishReason = result.FinishReason;
        LastTiming = new AnswerTiming(firstToken ?? clock.Elapsed, clock.Elapsed, result.TokenIds.Count);
        return answer;
    }

    /// <summary>The model's next-token logits after the last round , as floats; empty before the first question.</summary>
    public float[] NextTokenLogits() => state.NextLogits?.cpu().data<float>().ToArray() ?? [];

    /// <summary>Forgets the conversation (rounds, images, cache); parameters stay.</summary>
    public void Reset()
    {
        state.Dispose();
        state = NewState();
        rounds.Clear();
        pending.Clear();
        lastAnswerLacksEos = false;
    }

    public ChatTranscript ToTranscript() => new() {
        Format = ChatTranscript.FormatName,
        Model = ModelName,
        System = systemPrompt,
        Rounds = rounds.Select(r => new ChatTranscriptRound { Images = [.. r.Images], Question = r.Question, Answer = r.Answer, AnswerIds = r.AnswerIds?.ToList() }).ToList(),
    };

    /// <summary>Replaces the conversation by a saved one: every round's images and question and its saved answer are
    /// appended to the cache (nothing is generated). Saved answer ids are used as they are; answers without ids are
    /// tokenized with the training template.</summary>
    public void LoadTranscript(ChatTranscript transcript)
    {
        Reset();
        systemPrompt = transcript.System;
        var loaded = new List<ChatTranscriptRound>();
        try {
            for (int r = 0; r < transcript.Rounds.Count; r++) {
                var saved = transcript.Rounds[r];
                var images = saved.Images.Select(s => LoadImage(s)).ToList();
                var round = new ChatTranscriptRound { Images = [.. saved.Images], Question = saved.Question, Answer = saved.Answer ?? "", AnswerIds = saved.AnswerIds?.ToList() };
                var conversation = ToConversation([.. loaded, round]);
                int[] ids;
                bool lacksEos;
                if (round.AnswerIds is { } answerIds) {
                    var prompt = processor.RoundIds(ToConversation([.. loaded, new ChatTranscriptRound { Images = round.Images, Question = round.Question }]), lastAnswerLacksEos, SystemPrompt);
                    ids = [.. prompt, .. answerIds];
                    lacksEos = answerIds.Count == 0 || !model.LmConfig.EosTokenIds.Contains(answerIds[^1]);
                } else {
                    var template = new ConversationTemplate(processor.TemplateOptions with { SystemPrompt = SystemPrompt });
                    var roundIds = template.TokenizeRounds(conversation, processor.Tokenizer)[^1].InputIds;
                    ids = lastAnswerLacksEos ? [processor.Tokenizer.EosId, .. roundIds] : roundIds;
                    lacksEos = false;
                }
                long length = model.PromptPositions(ids.Length, images.Count);
                if (state.Length + length > MaxContext) throw new ContextFullException(state.Length + length, MaxContext);
                using (var pixels = processor.Pixels(images))
                    model.Append(state, ids, pixels);
                loaded.Add(round);
                rounds.Add(round);
                lastAnswerLacksEos = lacksEos;
            }
        } catch {
            Reset();
            throw;
        }
    }

    Conversation ToConversation(IReadOnlyList<ChatTranscriptRound> chatRounds) => new("chat",
        chatRounds.Select(r => new Round(r.Images.Select(s => (ImageRef)new FileImageRef(s)).ToArray(), r.Question, r.Answer)).ToArray(),
        [], SystemPrompt ?? "");

    public void Dispose() => state.Dispose();
}
