using System.CommandLine;
using VisualChat.Inference;
using VisualChat.Inference.Chat;
using VisualChat.Inference.Generation;
using VisualChat.Model;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat chat --model DIR</c>: interactive multi-image, multi-round chat over stdin/stdout.</summary>
public static class ChatCommand
{
    /// <summary>Where the demo writes its model; used when --model is not given.</summary>
    public const string DefaultModelFolder = "runs/demo/model";

    public static Command Create()
    {
        var modelOption = new Option<string?>("--model") { Description = $"Model folder (default: {DefaultModelFolder} when it exists)" };
        var temperatureOption = new Option<double>("--temperature") { Description = "Sampling temperature; 0 = greedy", DefaultValueFactory = _ => 0 };
        var topPOption = new Option<double>("--top-p") { Description = "Nucleus sampling threshold; 1 = off", DefaultValueFactory = _ => 1.0 };
        var maxNewTokensOption = new Option<int>("--max-new-tokens") { Description = "Longest answer in tokens", DefaultValueFactory = _ => 256 };
        var seedOption = new Option<ulong>("--seed") { Description = "Sampling seed", DefaultValueFactory = _ => 42 };
        var command = new Command("chat", "Chat about images with a VisualChat model (reads questions and /commands from stdin)");
        command.Options.Add(modelOption);
        command.Options.Add(temperatureOption);
        command.Options.Add(topPOption);
        command.Options.Add(maxNewTokensOption);
        command.Options.Add(seedOption);
        command.SetAction(parseResult =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            var folder = parseResult.GetValue(modelOption);
            if (folder is null) {
                if (!Directory.Exists(DefaultModelFolder)) {
                    error.WriteLine($"vchat chat: no --model given and the demo model folder '{DefaultModelFolder}' does not exist; pass --model DIR.");
                    return 1;
                }
                folder = DefaultModelFolder;
            }
            GenerationOptions options;
            try {
                options = new GenerationOptions {
                    Temperature = parseResult.GetValue(temperatureOption), TopP = parseResult.GetValue(topPOption),
                    MaxNewTokens = parseResult.GetValue(maxNewTokensOption), Seed = parseResult.GetValue(seedOption),
                };
                options.Validate();
            } catch (ArgumentException e) {
                error.WriteLine($"vchat chat: {e.Message}");
                return 1;
            }
            VisualChatModel model;
            try { model = VisualChatModel.Load(folder); DevicePolicy.ConfigureCpuThreads(model.parameters().Sum(p => p.numel())); }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or InvalidOperationException or ArgumentException) {
                error.WriteLine($"vchat chat: cannot load model folder '{folder}': {e.Message}");
                return 1;
            }
            using (model)
            using (var session = new ChatSession(model, folder) { Parameters = options }) {
                var loop = new ChatLoop(session, Console.In, output, error);
                loop.WriteBanner(folder);
                loop.Run();
            }
            return 0;
        });
        return command;
    }
}
