using System.CommandLine;
using System.Text.Json;
using VisualChat.Demo;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat demo [--out DIR] [--seed N] [--quick] [--set Name=value]... [--cache DIR]</c>: trains a tiny VisualChat from scratch on synthetic
/// multi-image conversations (vision pretraining, LM pretraining, then the DSVC stage through `vchat train`'s trainer on the data written as JSONL) and prints exact-match
/// accuracy per question kind with the time of each stage; <c>result.json</c> in DIR keeps the numbers.</summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Folder for the model (DIR/model, what `vchat chat` loads by default from runs/demo/model), tokenizer, held-out data, chat images and result.json.", DefaultValueFactory = _ => Path.Combine("runs", "demo") };
        var seed = new Option<int>("--seed") { Description = "Seed of every generator and initialisation.", DefaultValueFactory = _ => DemoRecipe.Default().Seed };
        var quick = new Option<bool>("--quick") { Description = "Reduced recipe (about a minute of CPU; ~55 % exact match instead of the full recipe's ≥ 90 %)." };
        var overrides = new Option<string[]>("--set") { Description = "Recipe override Name=value (repeatable), e.g. --set ChatSteps=800; the names are those printed on the 'recipe:' line.", AllowMultipleArgumentsPerToken = false };
        var cache = new Option<string?>("--cache") { Description = "Reuse the pretrained vision encoder and LM from this folder when their settings match (they are stored there otherwise)." };
        var command = new Command("demo", "Train and evaluate a tiny VisualChat on synthetic multi-image shapes conversations (CPU, ~10 min).")
        {
            output, seed, quick, overrides, cache,
        };
        command.SetAction(parse =>
        {
            DemoRecipe recipe;
            try
            {
                recipe = ((parse.GetValue(quick) ? DemoRecipe.Quick() : DemoRecipe.Default()) with { Seed = parse.GetValue(seed) })
                    .With(parse.GetValue(overrides) ?? []);
            }
            catch (ArgumentException e)
            {
                parse.InvocationConfiguration.Error.WriteLine($"vchat demo --set: {e.Message}");
                return 2;
            }
            var folder = parse.GetValue(output)!;
            var writer = parse.InvocationConfiguration.Output;
            writer.WriteLine($"recipe: {JsonSerializer.Serialize(recipe)}");
            DemoResult result;
            try
            {
                result = DemoPipeline.Run(recipe, folder, writer, parse.GetValue(cache));
            }
            catch (IOException e)
            {
                parse.InvocationConfiguration.Error.WriteLine($"vchat demo: cannot write to '{folder}': {e.Message}");
                return 1;
            }
            writer.WriteLine($"{"question kind",-14} {"exact match",12}");
            foreach (var (kind, accuracy) in result.AccuracyPerKind)
                writer.WriteLine($"{kind,-14} {accuracy,12:P1}");
            writer.WriteLine($"{"overall",-14} {result.Accuracy,12:P1}");
            foreach (var t in result.Timings)
                writer.WriteLine($"{t.Stage,-26} {t.WallSeconds,8:F1} s wall {t.CpuSeconds,8:F1} s CPU");
            writer.WriteLine($"{"total",-26} {result.TotalWallSeconds,8:F1} s wall {result.TotalCpuSeconds,8:F1} s CPU");
            long peakRss = VisualChat.Benchmarks.PeakMemory.HighWaterMark();
            if (peakRss > 0) writer.WriteLine($"peak RSS: {peakRss / (1024.0 * 1024.0):F0} MB");
            File.WriteAllText(Path.Combine(folder, "result.json"), JsonSerializer.Serialize(new { recipe, result, peakRssBytes = peakRss }, new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        });
        return command;
    }
}
