using System.CommandLine;
using VisualChat.Server;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat serve --model DIR</c>: the OpenAI-compatible chat server with its web chat page.</summary>
public static class ServeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "VisualChat model folder (visualchat.json, lm/, vision/).", Required = true };
        var name = new Option<string?>("--model-name") { Description = "Model id the API reports and accepts (default: the folder's name)." };
        var host = new Option<string>("--host") { Description = "Address to listen on (127.0.0.1, 0.0.0.0, localhost, ...).", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port (0: any free port).", DefaultValueFactory = _ => 8000 };
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on /v1/*." };
        var maxBatch = new Option<int>("--max-batch") { Description = "Most sequences prefilled or decoded at once.", DefaultValueFactory = _ => 8 };
        var maxImages = new Option<int?>("--max-images") { Description = "Most images per conversation (default: the model's max_images, else 8)." };
        var maxQueue = new Option<int>("--max-queue") { Description = "Most requests waiting for a batch slot; more get 429.", DefaultValueFactory = _ => 64 };
        var kvCacheMb = new Option<int>("--kv-cache-mb") { Description = "Memory for conversation caches kept for the next turn (0: no reuse).", DefaultValueFactory = _ => 1024 };
        var imageCacheMb = new Option<int>("--image-cache-mb") { Description = "Memory for image features kept by content hash (0: off).", DefaultValueFactory = _ => 256 };
        var imageRoot = new Option<string?>("--image-root") { Description = "Allow local image paths under this folder." };
        var allowRemote = new Option<bool>("--allow-remote-images") { Description = "Fetch http(s) image URLs (off: SSRF)." };
        var command = new Command("serve", "Serve a VisualChat model over an OpenAI-compatible HTTP API, with a web chat page at /")
        {
            model, name, host, port, apiKey, maxBatch, maxImages, maxQueue, kvCacheMb, imageCacheMb, imageRoot, allowRemote,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var stderr = parse.InvocationConfiguration.Error;
            var options = new ServerOptions {
                ModelFolder = parse.GetValue(model)!, ModelName = parse.GetValue(name), Host = parse.GetValue(host)!, Port = parse.GetValue(port),
                ApiKey = parse.GetValue(apiKey), MaxBatch = parse.GetValue(maxBatch), MaxImages = parse.GetValue(maxImages), MaxQueue = parse.GetValue(maxQueue),
                KvCacheMb = parse.GetValue(kvCacheMb), ImageCacheMb = parse.GetValue(imageCacheMb), ImageRoot = parse.GetValue(imageRoot), AllowRemoteImages = parse.GetValue(allowRemote),
            };
            try
            {
                await using var server = await VisualChatServer.StartAsync(options, cancellationToken);
                stderr.WriteLine($"vchat serve: model '{server.ModelName}' at {server.BaseAddress} (chat page), API at {server.BaseAddress}v1 — Ctrl+C stops.");
                await server.WaitForShutdownAsync(cancellationToken);
                return 0;
            }
            catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or FormatException or UnauthorizedAccessException)
            {
                stderr.WriteLine($"vchat serve: {e.Message}");
                return 1;
            }
        });
        return command;
    }
}
