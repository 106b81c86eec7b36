using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using VisualChat.Inference.Generation;
using VisualChat.Model;

namespace VisualChat.Inference.Chat;

/// <summary>
/// <see cref="IChatClient"/> over a <see cref="VisualChatModel"/>. Each call describes the whole conversation: user
/// messages are rounds (their text parts joined, their images — <see cref="DataContent"/> bytes or
/// <see cref="UriContent"/> URLs/paths — introduced in that round in order; consecutive user messages form one round),
/// assistant messages are the answers of the rounds before them, and system messages replace the system prompt.
/// When a call extends the previous call's conversation, the cached rounds are kept and only the new round is run.
/// </summary>
public sealed class VisualChatClient : IChatClient
{
    public const string ProviderName = "visualchat";

    readonly ChatSession session;
    readonly SemaphoreSlim gate = new(1, 1);
    readonly string modelId;

    /// <param name="processor">Tokenizer, template and image preprocessing (e.g. <see cref="VisualChatProcessor.Load"/> of
    /// the model folder); null: <see cref="VisualChatProcessor.From"/> the model.</param>
    public VisualChatClient(VisualChatModel model, string modelId, VisualChatProcessor? processor = null)
    {
        this.modelId = modelId;
        session = new ChatSession(model, modelId, processor: processor);
        Metadata = new ChatClientMetadata(ProviderName, defaultModelId: modelId);
    }

    public ChatClientMetadata Metadata { get; }
    /// <summary>Decoding settings that <see cref="ChatOptions"/> do not override (greedy by default).</summary>
    public GenerationOptions DefaultParameters { get; set; } = new();

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (text, finish, tokens) = await Task.Run(() => Run(messages, options, null, cancellationToken), cancellationToken).ConfigureAwait(false);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text)) {
            ModelId = modelId, FinishReason = finish, Usage = new UsageDetails { OutputTokenCount = tokens },
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var channel = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var list = messages.ToList();
        var run = Task.Run(() => {
            try { return Run(list, options, delta => channel.Writer.TryWrite(delta), cancellationToken); }
            finally { channel.Writer.Complete(); }
        }, cancellationToken);
        var responseId = Guid.NewGuid().ToString("N");
        await foreach (var delta in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            yield return new ChatResponseUpdate(ChatRole.Assistant, delta) { ModelId = modelId, ResponseId = responseId };
        var (_, finish, tokens) = await run.ConfigureAwait(false);
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(new UsageDetails { OutputTokenCount = tokens })]) {
            ModelId = modelId, ResponseId = responseId, FinishReason = finish,
        };
    }

    (string Text, ChatFinishReason Finish, long Tokens) Run(IEnumerable<ChatMessage> messages, ChatOptions? options, Action<string>? onDelta, CancellationToken cancellationToken)
    {
        var (system, rounds) = ToRounds(messages);
        gate.Wait(cancellationToken);
        try {
            var history = rounds.Take(rounds.Count - 1).ToList();
            if (!Extends(system, history)) {
                session.LoadTranscript(new ChatTranscript { Format = ChatTranscript.FormatName, Model = modelId, System = system, Rounds = history });
            }
            foreach (var image in rounds[^1].Images) session.AddImage(image);
            session.Parameters = Map(options);
            var text = session.Ask(rounds[^1].Question, onDelta, cancellationToken);
            var finish = session.LastFinishReason switch {
                FinishReason.Length => ChatFinishReason.Length,
                _ => ChatFinishReason.Stop,
            };
            return (text, finish, session.Rounds[^1].AnswerIds?.Count ?? 0);
        } catch {
            session.Reset();
            throw;
        } finally {
            gate.Release();
        }
    }

    /// <summary>Whether the cached conversation is exactly <paramref name="history"/> (same system, images, questions, answers).</summary>
    bool Extends(string? system, IReadOnlyList<ChatTranscriptRound> history)
    {
        if (session.Rounds.Count != history.Count || session.ToTranscript().System != system || session.Images.Any(i => i.Pending)) return false;
        for (int i = 0; i < history.Count; i++) {
            var cached = session.Rounds[i];
            if (cached.Question != history[i].Question || cached.Answer != history[i].Answer || !cached.Images.SequenceEqual(history[i].Images)) return false;
        }
        return true;
    }

    GenerationOptions Map(ChatOptions? options)
    {
        var p = DefaultParameters;
        if (options is null) return p;
        if (options.Temperature is { } t) p = p with { Temperature = t };
        if (options.TopP is { } topP) p = p with { TopP = topP };
        if (options.TopK is { } topK) p = p with { TopK = topK };
        if (options.MaxOutputTokens is { } max) p = p with { MaxNewTokens = max };
        if (options.Seed is { } seed) p = p with { Seed = unchecked((ulong)seed) };
        if (options.StopSequences is { Count: > 0 } stops) p = p with { StopStrings = stops.ToArray() };
        if (options.FrequencyPenalty is null && options.AdditionalProperties?.TryGetValue("repetition_penalty", out var rp) == true && rp is IConvertible c)
            p = p with { RepetitionPenalty = c.ToDouble(System.Globalization.CultureInfo.InvariantCulture) };
        p.Validate();
        return p;
    }

    /// <summary>The conversation as rounds; the last round is the question to answer (it has no answer).</summary>
    public static (string? System, List<ChatTranscriptRound> Rounds) ToRounds(IEnumerable<ChatMessage> messages)
    {
        string? system = null;
        var rounds = new List<ChatTranscriptRound>();
        ChatTranscriptRound? open = null;
        int index = 0;
        foreach (var message in messages) {
            index++;
            if (message.Role == ChatRole.System) {
                system = system is null ? message.Text : system + "\n" + message.Text;
            } else if (message.Role == ChatRole.User) {
                if (open is null) { open = new ChatTranscriptRound(); rounds.Add(open); }
                foreach (var content in message.Contents) {
                    switch (content) {
                        case TextContent text when !string.IsNullOrEmpty(text.Text):
                            open.Question = open.Question.Length == 0 ? text.Text : open.Question + "\n" + text.Text;
                            break;
                        case DataContent data when IsImage(data.MediaType):
                            open.Images.Add(data.Uri);
                            break;
                        case UriContent uri when IsImage(uri.MediaType):
                            open.Images.Add(uri.Uri.IsFile ? uri.Uri.LocalPath : uri.Uri.AbsoluteUri);
                            break;
                        case DataContent or UriContent:
                            throw new ArgumentException($"Message {index}: only image contents are supported, got media type '{(content as DataContent)?.MediaType ?? (content as UriContent)?.MediaType}'.", nameof(messages));
                    }
                }
            } else if (message.Role == ChatRole.Assistant) {
                if (open is null) throw new ArgumentException($"Message {index} is an assistant message without a user message before it.", nameof(messages));
                open.Answer = message.Text;
                open = null;
            } else {
                throw new ArgumentException($"Message {index} has role '{message.Role}'; only system, user and assistant messages are supported.", nameof(messages));
            }
        }
        if (open is null) throw new ArgumentException("The last message must be a user message (the question to answer).", nameof(messages));
        return (system, rounds);
    }

    static bool IsImage(string? mediaType) => mediaType?.StartsWith("image/", StringComparison.OrdinalIgnoreCase) == true;

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? Metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(session.Model) ? session.Model
        : null;

    public void Dispose()
    {
        session.Dispose();
        gate.Dispose();
    }
}
