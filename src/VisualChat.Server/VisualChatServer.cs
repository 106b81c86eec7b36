using System.Net;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;

namespace VisualChat.Server;

/// <summary>
/// <c>vchat serve</c>: an OpenAI-compatible chat-completions server (JSON and SSE in OpenAI's shapes) over one
/// VisualChat model, with a web chat page at <c>/</c>. Requests are parsed and their images decoded on the request
/// threads; a <see cref="ChatScheduler"/> thread owns the model.
/// </summary>
public sealed class VisualChatServer : IAsyncDisposable
{
    readonly WebApplication app;
    readonly VisualChatModel model;
    readonly VisualChatProcessor processor;
    readonly ChatScheduler scheduler;
    readonly ServerOptions options;
    readonly HttpClient? http;
    readonly byte[]? apiKey;
    readonly int maxImages;
    readonly long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    VisualChatServer(ServerOptions options, VisualChatModel model, VisualChatProcessor processor)
    {
        this.options = options;
        this.model = model;
        this.processor = processor;
        ModelName = options.ModelName ?? new DirectoryInfo(options.ModelFolder).Name;
        maxImages = options.MaxImages ?? model.Config.MaxImages ?? 8;
        if (model.Config.MaxImages is { } modelMax) maxImages = Math.Min(maxImages, modelMax);
        apiKey = options.ApiKey is null ? null : Encoding.UTF8.GetBytes(options.ApiKey);
        // Serving never trains: a frozen encoder lets the model keep image features by content hash.
        model.VisionEncoder.Freeze();
        if (options.ImageCacheMb > 0) model.FeatureCache = new VisionFeatureCache((long)options.ImageCacheMb << 20);
        if (options.AllowRemoteImages) http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        scheduler = new ChatScheduler(model, processor, Metrics, options.MaxBatch, options.MaxQueue, (long)options.KvCacheMb << 20);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel => {
            kestrel.Limits.MaxRequestBodySize = 64L << 20;
            if (options.Host is "localhost") kestrel.ListenLocalhost(options.Port);
            else kestrel.Listen(IPAddress.Parse(options.Host), options.Port);
        });
        app = builder.Build();
        app.Use(Authenticate);
        app.MapGet("/", (HttpContext context) => Page(context));
        app.MapGet("/health", () => Results.Json(new JsonObject { ["status"] = "ok", ["model"] = ModelName }));
        app.MapGet("/metrics", () => Results.Text(Metrics.ToPrometheus(), "text/plain; version=0.0.4; charset=utf-8"));
        app.MapGet("/v1/models", () => Results.Text(new JsonObject {
            ["object"] = "list",
            ["data"] = new JsonArray(new JsonObject { ["id"] = ModelName, ["object"] = "model", ["created"] = created, ["owned_by"] = "visualchat" }),
        }.ToJsonString(), "application/json"));
        app.MapPost("/v1/chat/completions", ChatCompletionsAsync);
    }

    public ServerMetrics Metrics { get; } = new();
    public string ModelName { get; }
    /// <summary>Where the server listens (the real port when started with port 0).</summary>
    public Uri BaseAddress { get; private set; } = null!;
    public int MaxImages => maxImages;
    internal ChatScheduler Scheduler => scheduler;

    /// <summary>Loads the model folder and starts listening.</summary>
    public static async Task<VisualChatServer> StartAsync(ServerOptions options, CancellationToken cancellationToken = default)
    {
        options.Validate();
        var model = VisualChatModel.Load(options.ModelFolder);
        try {
            var processor = VisualChatProcessor.Load(options.ModelFolder);
            DevicePolicy.ConfigureCpuThreads(model.LmConfig.ParameterCount());
            var server = new VisualChatServer(options, model, processor);
            await server.app.StartAsync(cancellationToken).ConfigureAwait(false);
            var address = server.app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            server.BaseAddress = new Uri(address.Replace("://[::]", "://localhost", StringComparison.Ordinal).Replace("://0.0.0.0", "://localhost", StringComparison.Ordinal) + "/");
            return server;
        } catch {
            model.Dispose();
            throw;
        }
    }

    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => app.WaitForShutdownAsync(cancellationToken);

    async Task Authenticate(HttpContext context, RequestDelegate next)
    {
        if (apiKey is not null && context.Request.Path.StartsWithSegments("/v1")) {
            string header = context.Request.Headers.Authorization.ToString();
            var given = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? Encoding.UTF8.GetBytes(header[7..].Trim()) : [];
            if (!CryptographicOperations.FixedTimeEquals(given, apiKey)) {
                Metrics.Error();
                await WriteError(context, new ApiException(401,
                    header.Length == 0 ? "No API key given: send 'Authorization: Bearer <key>' (the key the server was started with --api-key)." : "Incorrect API key provided.",
                    "invalid_request_error", null, "invalid_api_key")).ConfigureAwait(false);
                return;
            }
        }
        await next(context).ConfigureAwait(false);
    }

    static Task Page(HttpContext context)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("VisualChat.Server.wwwroot.index.html")
            ?? throw new InvalidOperationException("The chat page is missing from the server assembly (wwwroot/index.html).");
        using var reader = new StreamReader(stream);
        context.Response.ContentType = "text/html; charset=utf-8";
        return context.Response.WriteAsync(reader.ReadToEnd());
    }

    static async Task WriteError(HttpContext context, ApiException error)
    {
        context.Response.StatusCode = error.Status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(error.ToJson().ToJsonString()).ConfigureAwait(false);
    }

    async Task ChatCompletionsAsync(HttpContext context)
    {
        Metrics.Request();
        var aborted = context.RequestAborted;
        bool started = false;
        try {
            if (context.Request.ContentType is { } type && !type.StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
                throw ApiException.BadRequest($"Content-Type must be application/json (got '{type}').");
            var request = await ChatCompletionRequest.ParseAsync(context.Request.Body,
                new ChatCompletionRequest.ImagePolicy(maxImages, options.ImageRoot, options.AllowRemoteImages, http), aborted).ConfigureAwait(false);
            if (request.Model != ModelName)
                throw new ApiException(404, $"The model '{request.Model}' does not exist; this server serves '{ModelName}' (see GET /v1/models).", "invalid_request_error", "model", "model_not_found");
            var prompt = ConversationPrompt.Build(request, processor, model);
            long room = model.MaxContext - prompt.Positions;
            if (room < 1)
            {
                throw ApiException.BadRequest($"This model's maximum context length is {model.MaxContext} positions, but the messages need {prompt.Positions} " +
                    $"(each image takes {model.ImageTokens}) plus one to answer; shorten the conversation or send fewer images.", "messages", "context_length_exceeded");
            }

            var generation = new GenerationOptions {
                MaxNewTokens = (int)Math.Min(request.MaxTokens ?? options.DefaultMaxTokens, room),
                Temperature = request.Temperature ?? 0,
                TopP = request.TopP ?? 1,
                StopStrings = request.Stop,
                Seed = request.Seed is { } seed ? unchecked((ulong)seed) : (ulong)Random.Shared.NextInt64(),
            };
            var job = new ChatJob(prompt, generation, aborted);
            if (!scheduler.TryEnqueue(job)) {
                context.Response.Headers.RetryAfter = "1";
                throw new ApiException(429, $"The server is busy: {options.MaxBatch} sequences are running and {options.MaxQueue} requests are waiting (--max-batch, --max-queue). Retry shortly.", "rate_limit_error", null, "queue_full");
            }
            var reader = job.Events.Reader;
            // Nothing is sent before the scheduler's first word, so a failed prefill is still a plain error status.
            if (!await reader.WaitToReadAsync(aborted).ConfigureAwait(false)) return;
            if (reader.TryPeek(out var first) && first is JobFailed failed) throw failed.Error;
            string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
            long createdAt = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            if (request.Stream) {
                started = true;
                await StreamAsync(context, reader, id, createdAt, request.IncludeUsage, aborted).ConfigureAwait(false);
            } else {
                var text = new StringBuilder();
                JobFinished? finished = null;
                await foreach (var e in reader.ReadAllAsync(aborted).ConfigureAwait(false)) {
                    if (e is JobDelta delta) text.Append(delta.Text);
                    else if (e is JobFinished f) finished = f;
                    else if (e is JobFailed f2) throw f2.Error;
                }
                if (finished is null) return;
                var body = new JsonObject {
                    ["id"] = id, ["object"] = "chat.completion", ["created"] = createdAt, ["model"] = ModelName,
                    ["choices"] = new JsonArray(new JsonObject {
                        ["index"] = 0,
                        ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = text.ToString(), ["refusal"] = null },
                        ["logprobs"] = null,
                        ["finish_reason"] = FinishReasonName(finished.Result.FinishReason),
                    }),
                    ["usage"] = Usage(finished),
                    ["system_fingerprint"] = null,
                };
                context.Response.ContentType = "application/json";
                await context.Response.WriteAsync(body.ToJsonString(), aborted).ConfigureAwait(false);
            }
        } catch (ApiException e) when (!started) {
            Metrics.Error();
            await WriteError(context, e).ConfigureAwait(false);
        } catch (ApiException e) {
            // Headers are gone: OpenAI streams report a late error as an SSE event carrying the error object.
            Metrics.Error();
            await TryWrite(context, "data: " + e.ToJson().ToJsonString() + "\n\n");
        } catch (OperationCanceledException) when (aborted.IsCancellationRequested) {
            // The client left; the scheduler sees the same token and ends the sequence at its next step.
        }
    }

    async Task StreamAsync(HttpContext context, System.Threading.Channels.ChannelReader<JobEvent> reader, string id, long createdAt, bool includeUsage, CancellationToken aborted)
    {
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        JsonObject Chunk(JsonObject delta, string? finish) {
            var chunk = new JsonObject {
                ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = createdAt, ["model"] = ModelName, ["system_fingerprint"] = null,
                ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["delta"] = delta, ["logprobs"] = null, ["finish_reason"] = finish }),
            };
            if (includeUsage) chunk["usage"] = null;
            return chunk;
        }
        async Task Send(JsonObject chunk) {
            await context.Response.WriteAsync("data: " + chunk.ToJsonString() + "\n\n", aborted).ConfigureAwait(false);
            await context.Response.Body.FlushAsync(aborted).ConfigureAwait(false);
        }
        await Send(Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "", ["refusal"] = null }, null)).ConfigureAwait(false);
        await foreach (var e in reader.ReadAllAsync(aborted).ConfigureAwait(false)) {
            switch (e) {
                case JobDelta delta:
                    await Send(Chunk(new JsonObject { ["content"] = delta.Text }, null)).ConfigureAwait(false);
                    break;
                case JobFinished finished:
                    await Send(Chunk(new JsonObject(), FinishReasonName(finished.Result.FinishReason))).ConfigureAwait(false);
                    if (includeUsage) {
                        await Send(new JsonObject {
                            ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = createdAt, ["model"] = ModelName, ["system_fingerprint"] = null,
                            ["choices"] = new JsonArray(), ["usage"] = Usage(finished),
                        }).ConfigureAwait(false);
                    }
                    break;
                case JobFailed failed:
                    throw failed.Error;
            }
        }
        await context.Response.WriteAsync("data: [DONE]\n\n", aborted).ConfigureAwait(false);
        await context.Response.Body.FlushAsync(aborted).ConfigureAwait(false);
    }

    static async Task TryWrite(HttpContext context, string text)
    {
        try { await context.Response.WriteAsync(text, context.RequestAborted).ConfigureAwait(false); }
        catch (Exception e) when (e is OperationCanceledException or IOException) { }
    }

    static JsonObject Usage(JobFinished finished) => new() {
        ["prompt_tokens"] = finished.PromptTokens,
        ["completion_tokens"] = finished.Result.TokenIds.Count,
        ["total_tokens"] = finished.PromptTokens + finished.Result.TokenIds.Count,
        ["prompt_tokens_details"] = new JsonObject { ["cached_tokens"] = finished.ReusedPositions },
    };

    static string FinishReasonName(FinishReason reason) => reason == FinishReason.Length ? "length" : "stop";

    public async ValueTask DisposeAsync()
    {
        try { await app.StopAsync().ConfigureAwait(false); } catch (OperationCanceledException) { }
        await app.DisposeAsync().ConfigureAwait(false);
        scheduler.Dispose();
        http?.Dispose();
        model.FeatureCache?.Dispose();
        model.Dispose();
    }
}
