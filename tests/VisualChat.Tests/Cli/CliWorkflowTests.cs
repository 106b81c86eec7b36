using System.CommandLine;
using VisualChat.Cli.Commands;
using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Tests.Model;
using VisualChat.Tests.Training;
using VisualChat.Training;
using VisualChat.Weights;

namespace VisualChat.Tests.Cli;

/// <summary>
/// data shapes → train (visualchat) → export, and one bench command, run in-process through the root command
/// Program.cs builds, with tiny settings. These commands print through Console, so the class swaps Console.Out/Error
/// and runs in the process-wide-state collection.
/// </summary>
[Collection(ProcessWideStateCollection.Name)]
public sealed class CliWorkflowTests
{
    static (int ExitCode, string Out, string Err) Vchat(params string[] args)
    {
        var root = new RootCommand("vchat");
        foreach (var command in CommandCatalog.All()) root.Subcommands.Add(command);
        var output = new StringWriter();
        var error = new StringWriter();
        TextWriter oldOut = Console.Out, oldErr = Console.Error;
        Console.SetOut(output);
        Console.SetError(error);
        try
        {
            int code = root.Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = error });
            return (code, output.ToString(), error.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    [Fact]
    public void DataShapes_Train_Export_ThroughTheCli()
    {
        using var folder = new TempFolder();
        var data = folder.File("data");
        var shapes = Vchat("data", "shapes", "--out", data, "--train", "10", "--eval", "2", "--seed", "4", "--image-size", "32");
        Assert.True(shapes.ExitCode == 0, shapes.Err);
        Assert.Equal(10, File.ReadAllLines(Path.Combine(data, "train.jsonl")).Length);
        Assert.Equal(2, File.ReadAllLines(Path.Combine(data, "eval.jsonl")).Length);
        // The CLI passes seed, counts and size through: the library's generator with the same arguments writes the same records.
        var reference = folder.File("reference");
        new ShapesConversationGenerator(4).WriteJsonl(reference, "train.jsonl", 0, 10, 32);
        Assert.Equal(File.ReadAllText(Path.Combine(reference, "train.jsonl")), File.ReadAllText(Path.Combine(data, "train.jsonl")));

        var modelFolder = folder.File("model");
        using (var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 3)) model.Save(modelFolder);
        File.WriteAllText(folder.File("data.json"), $$"""
            {"root": "{{data}}", "eval_fraction": 0, "datasets": [{"name": "shapes", "format": "jsonl", "path": "train.jsonl"}]}
            """);
        var run = folder.File("run");
        File.WriteAllText(folder.File("train.json"), $$"""
            {"model": {"kind": "visualchat", "path": "{{modelFolder}}"}, "data_config": "{{folder.File("data.json")}}",
             "output_dir": "{{run}}", "per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 0.01}
            """);
        var train = Vchat("train", "--config", folder.File("train.json"));
        Assert.True(train.ExitCode == 0, train.Err + train.Out);
        var final = CheckpointStore.TryRead(Path.Combine(run, "final"));
        Assert.NotNull(final);
        Assert.Equal(2, final!.Step);

        var exported = folder.File("exported");
        var export = Vchat("export", "--checkpoint", Path.Combine(run, "final"), "--out", exported);
        Assert.True(export.ExitCode == 0, export.Err + export.Out);
        // Same checkpoint through the library: the CLI's folder holds the same tensors, and training changed the projection.
        var libraryExport = CheckpointExport.Export(Path.Combine(run, "final"), folder.File("library-export"));
        using var viaCli = VisualChatModel.Load(exported);
        using var viaLibrary = VisualChatModel.Load(libraryExport);
        using var baseModel = VisualChatModel.Load(modelFolder);
        var library = viaLibrary.state_dict();
        foreach (var (name, tensor) in viaCli.state_dict())
            Assert.True(TrainingTestKit.BitIdentical(tensor, library[name]), $"{name} differs between the CLI and library exports");
        Assert.False(TrainingTestKit.BitIdentical(viaCli.state_dict()["projection.0.weight"], baseModel.state_dict()["projection.0.weight"]));
    }

    [Fact]
    public void BenchAttention_ReportsEveryKernelAtEachLength()
    {
        var bench = Vchat("bench", "attention", "--lengths", "64", "--images", "1", "--image-tokens", "8", "--heads", "2", "--head-dim", "8", "--repeats", "1");
        Assert.True(bench.ExitCode == 0, bench.Err);
        var rows = bench.Out.Split('\n').Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).Where(p => p.Length == 6 && p[1] == "64").ToList();
        Assert.True(rows.Count >= 3, $"expected causal, MMCA and dense rows at L = 64:\n{bench.Out}");
        Assert.Contains(rows, r => r[0].Contains("causal", StringComparison.OrdinalIgnoreCase));
        Assert.All(rows, r => Assert.Equal("1", r[2]));
    }
}
