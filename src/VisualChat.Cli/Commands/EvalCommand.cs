using System.CommandLine;
using System.Globalization;
using VisualChat.Inference;
using VisualChat.Inference.Evaluation;
using VisualChat.Inference.Generation;
using VisualChat.Model;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat eval</c>: answers DeepSpeed-VisualChat eval conversations round by round and writes a CSV.</summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var modelOption = new Option<string>("--model") { Description = "Model folder", Required = true };
        var conversationsOption = new Option<string>("--conversations") { Description = "DSVC eval JSON (eval/eval_data/*.json)", Required = true };
        var imagesRootOption = new Option<string?>("--images-root") { Description = "Folder the JSON's image paths are relative to (default: the nearest folder above the JSON where they exist)" };
        var outOption = new Option<string>("--out") { Description = "Results CSV: test_name,image_path,question,answer", Required = true };
        var seedOption = new Option<ulong>("--seed") { Description = "Sampling seed", DefaultValueFactory = _ => 42 };
        var maxNewTokensOption = new Option<int>("--max-new-tokens") { Description = "Longest answer in tokens", DefaultValueFactory = _ => 256 };
        var temperatureOption = new Option<double>("--temperature") { Description = "0 = greedy (default)", DefaultValueFactory = _ => 0 };
        var batchOption = new Option<int>("--batch") { Description = "Conversations decoded together", DefaultValueFactory = _ => 4 };
        var command = new Command("eval", "Run DeepSpeed-VisualChat eval conversations and write the answers as CSV");
        foreach (var option in new Option[] { modelOption, conversationsOption, imagesRootOption, outOption, seedOption, maxNewTokensOption, temperatureOption, batchOption })
            command.Options.Add(option);
        command.SetAction(parseResult =>
        {
            var output = parseResult.InvocationConfiguration.Output;
            var error = parseResult.InvocationConfiguration.Error;
            var json = parseResult.GetValue(conversationsOption)!;
            var outPath = parseResult.GetValue(outOption)!;
            var folder = parseResult.GetValue(modelOption)!;
            int batch = parseResult.GetValue(batchOption);
            if (batch < 1) { error.WriteLine($"vchat eval: --batch must be at least 1 (got {batch})."); return 1; }
            if (!File.Exists(json)) { error.WriteLine($"vchat eval: conversations file '{json}' does not exist."); return 1; }
            var root = parseResult.GetValue(imagesRootOption) ?? DsvcEvaluation.FindImagesRoot(json);
            if (root is null) {
                error.WriteLine($"vchat eval: none of the image paths of '{json}' exists relative to any folder above it; pass --images-root DIR.");
                return 1;
            }
            var options = new GenerationOptions {
                MaxNewTokens = parseResult.GetValue(maxNewTokensOption), Seed = parseResult.GetValue(seedOption), Temperature = parseResult.GetValue(temperatureOption),
            };
            try {
                options.Validate();
                var cases = DsvcEvaluation.ReadCases(json, root);
                using var model = VisualChatModel.Load(folder);
                DevicePolicy.ConfigureCpuThreads(model.parameters().Sum(p => p.numel()));
                var evaluation = new DsvcEvaluation(model, options, batch);
                var (rows, summary) = evaluation.Run(cases, (c, reason) =>
                    error.WriteLine($"vchat eval: skipping test '{c.TestName}': {reason}."));
                var directory = Path.GetDirectoryName(Path.GetFullPath(outPath));
                if (directory is not null) Directory.CreateDirectory(directory);
                using (var writer = new StreamWriter(outPath)) DsvcEvaluation.WriteCsv(writer, rows);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{summary.ConversationsDone} conversations done, {summary.ConversationsSkipped} skipped, {summary.Rounds} rounds, {summary.GeneratedTokens} tokens in {summary.WallTime.TotalSeconds:0.00} s ({summary.TokensPerSecond:0.0} tokens/s) → {outPath}"));
                return 0;
            } catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or InvalidOperationException
                                           or ArgumentException or System.Text.Json.JsonException or Vision.Imaging.ImageDecodeException) {
                error.WriteLine($"vchat eval: {e.Message}");
                return 1;
            }
        });
        return command;
    }
}
