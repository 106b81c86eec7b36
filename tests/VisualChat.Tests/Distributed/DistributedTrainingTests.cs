using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using System.Text.Json.Nodes;
using VisualChat.Cli.Commands;
using VisualChat.Training;
using VisualChat.Tests.Model;
using VisualChat.Weights;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace VisualChat.Tests.Distributed;

/// <summary>A tiny LLaMA folder, texts of varied lengths, and the one-process reference run every mpirun run is
/// compared with (global batch 6 × accumulation 2, two epochs, a checkpoint per epoch).</summary>
public sealed class DistributedFixture : IDisposable
{
    readonly TempFolder _root = new();
    public string Root => _root.Path;
    public string ModelFolder => Path.Combine(Root, "model");
    public string ReferenceRun => Path.Combine(Root, "reference");
    /// <summary>19 training texts: global batches of 6 leave a last batch of 1, so with 2 ranks × 3 rank 1 has no
    /// sample in it, and the ranks' target counts differ in every batch.</summary>
    public const int TrainTexts = 19;

    public DistributedFixture()
    {
        var init = DistributedTrainingTests.Cli("init-model", "--preset", "tiny", "--out", ModelFolder, "--seed", "5");
        Assert.True(init.Code == 0, init.Err);
        File.WriteAllLines(Path.Combine(Root, "train.jsonl"), Enumerable.Range(0, TrainTexts).Select(i =>
            $"{{\"text\": \"{string.Join(' ', Enumerable.Range(0, 1 + i % 7).Select(k => $"word{(i * 7 + k) % 23}"))} ends here.\"}}"));
        File.WriteAllLines(Path.Combine(Root, "eval.jsonl"), Enumerable.Range(0, 5).Select(i => $"{{\"text\": \"evaluation text number {i} is short.\"}}"));
        var reference = DistributedTrainingTests.Cli("train", "--config", Config("reference", perDevice: 6));
        Assert.True(reference.Code == 0, reference.Err + reference.Out);
    }

    /// <summary>A training config writing to <c>Root/name</c>; every tensor trains, buckets are small so that tensors
    /// and chunks straddle bucket and rank boundaries.</summary>
    public string Config(string name, int perDevice, int zeroStage = 0, string extra = "")
    {
        var json = new JsonObject {
            ["model"] = new JsonObject { ["kind"] = "llama-lm", ["path"] = ModelFolder },
            ["train_data"] = Path.Combine(Root, "train.jsonl"), ["eval_data"] = Path.Combine(Root, "eval.jsonl"),
            ["output_dir"] = Path.Combine(Root, name), ["precision"] = "fp32", ["unfreeze"] = new JsonArray("*"),
            ["per_device_train_batch_size"] = perDevice, ["per_device_eval_batch_size"] = 2, ["gradient_accumulation_steps"] = 2,
            ["num_train_epochs"] = 2, ["learning_rate"] = 3e-3, ["adam_beta1"] = 0.9, ["weight_decay"] = 0.01, ["max_grad_norm"] = 0.5,
            ["lr_scheduler_type"] = "linear", ["log_every_steps"] = 1, ["max_seq_len"] = 32,
            ["distributed"] = new JsonObject { ["zero_stage"] = zeroStage, ["bucket_mb"] = 0.05 },
        };
        foreach (var (key, value) in JsonNode.Parse("{" + extra + "}")!.AsObject().ToList()) json[key] = value?.DeepClone();
        var path = Path.Combine(Root, name + ".json");
        File.WriteAllText(path, json.ToJsonString());
        return path;
    }

    public void Dispose() => _root.Dispose();
}

/// <summary>
/// <c>mpirun -np 2 vchat train</c> on a tiny model: data parallel and ZeRO 1/2 train the same tensors as one process
/// with the same global batch and seed, checkpoints resume across rank counts, and a killed rank ends the job.
/// These need Open MPI's mpirun; without it they fail (they do not skip) and say how to install it.
/// </summary>
public sealed class DistributedTrainingTests(DistributedFixture fixture, ITestOutputHelper log) : IClassFixture<DistributedFixture>
{
    const double Tolerance = 1e-5;

    public static InProcessVchat.Result Cli(params string[] args) => InProcessVchat.Run(args);

    static string Mpirun()
    {
        foreach (var folder in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
            if (folder.Length > 0 && File.Exists(Path.Combine(folder, "mpirun"))) return Path.Combine(folder, "mpirun");
        Assert.Fail("mpirun is not installed: the distributed training tests need Open MPI (apt-get install openmpi-bin libopenmpi-dev; .ci/run installs it).");
        return "";
    }

    /// <summary>Starts <c>mpirun -np N dotnet vchat.dll ARGS</c>.</summary>
    static Process StartMpi(int ranks, StringBuilder output, params string[] args)
    {
        var host = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        var start = new ProcessStartInfo(Mpirun()) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--allow-run-as-root", "--oversubscribe", "-np", ranks.ToString(CultureInfo.InvariantCulture), host, Path.Combine(AppContext.BaseDirectory, "vchat.dll") }.Concat(args))
            start.ArgumentList.Add(a);
        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    static (int Code, string Output) RunMpi(int ranks, params string[] args)
    {
        var output = new StringBuilder();
        using var process = StartMpi(ranks, output, args);
        if (!process.WaitForExit(TimeSpan.FromSeconds(120))) { process.Kill(entireProcessTree: true); Assert.Fail($"mpirun did not finish within 120 s:\n{output}"); }
        process.WaitForExit();
        lock (output) return (process.ExitCode, output.ToString());
    }

    /// <summary>Largest |a − b| over the tensors of two checkpoint files (which must hold the same names).</summary>
    static double MaxDifference(string fileA, string fileB)
    {
        using var a = TensorFiles.Open(fileA);
        using var b = TensorFiles.Open(fileB);
        Assert.Equal(a.Entries.Select(e => e.Name).Order(), b.Entries.Select(e => e.Name).Order());
        double worst = 0;
        foreach (var entry in a.Entries)
        {
            using var scope = NewDisposeScope();
            var x = a.Read(entry.Name, ScalarType.Float64);
            var y = b.Read(entry.Name, ScalarType.Float64);
            Assert.Equal(x.shape, y.shape);
            if (x.numel() > 0) worst = Math.Max(worst, x.sub(y).abs().max().item<double>());
        }
        return worst;
    }

    /// <summary>Training loss by step, from metrics.jsonl.</summary>
    static Dictionary<long, double> TrainLosses(string runDir) => File.ReadAllLines(Path.Combine(runDir, "metrics.jsonl"))
        .Select(l => JsonNode.Parse(l)!.AsObject()).Where(o => (string?)o["kind"] == "train")
        .ToDictionary(o => o["step"]!.GetValue<long>(), o => o["loss"]!.GetValue<double>());

    void AssertSameAsReference(string runDir, string output) => AssertSameAs(fixture.ReferenceRun, runDir, output);

    void AssertSameAs(string referenceRun, string runDir, string output)
    {
        var final = Path.Combine(runDir, "final");
        Assert.True(File.Exists(Path.Combine(final, CheckpointStore.WeightsFile)), $"no final checkpoint in {runDir}:\n{output}");
        var reference = Path.Combine(referenceRun, "final");
        double weights = MaxDifference(Path.Combine(reference, CheckpointStore.WeightsFile), Path.Combine(final, CheckpointStore.WeightsFile));
        double moments = MaxDifference(Path.Combine(reference, CheckpointStore.OptimizerFile), Path.Combine(final, CheckpointStore.OptimizerFile));
        Assert.True(weights <= Tolerance, $"trained tensors differ from one process by {weights:E2}\n{output}");
        Assert.True(moments <= Tolerance, $"AdamW moments differ from one process by {moments:E2}\n{output}");
        // A resumed run logs only the steps it trained: those must match the reference's.
        var expected = TrainLosses(referenceRun);
        var actual = TrainLosses(runDir);
        Assert.NotEmpty(actual);
        Assert.Equal(expected.Keys.Max(), actual.Keys.Max());
        double losses = actual.Max(kv => Math.Abs(kv.Value - expected[kv.Key]));
        Assert.True(losses <= Tolerance, $"losses differ from one process by {losses:E2}");
        log.WriteLine($"{Path.GetFileName(runDir)}: max |Δ| weights {weights:E2}, AdamW moments {moments:E2}, loss {losses:E2} over steps {string.Join(",", actual.Keys)}");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void TwoRanksTrainTheSameTensorsAsOneProcess(int zeroStage)
    {
        var name = $"np2-zero{zeroStage}";
        var (code, output) = RunMpi(2, "train", "--config", fixture.Config(name, perDevice: 3, zeroStage));
        Assert.True(code == 0, output);
        var runDir = Path.Combine(fixture.Root, name);
        AssertSameAsReference(runDir, output);
        // Rank 0 alone writes the run folder; rank 1 logs beside it.
        Assert.Contains("rank 1 of 2", File.ReadAllText(Path.Combine(runDir, "rank-1.log")));
        Assert.False(File.Exists(Path.Combine(runDir, "rank-0.log")));
        Assert.Equal(4, TrainLosses(runDir).Count);

        // 2 → 1: the 2-rank epoch-1 checkpoint resumed by one process with the same global batch ends where the
        // uninterrupted runs do.
        var resumed = Cli("train", "--config", fixture.Config($"{name}-resumed-on-1", perDevice: 6, zeroStage),
            "--resume", Path.Combine(runDir, "epoch-1"));
        Assert.True(resumed.Code == 0, resumed.Err + resumed.Out);
        Assert.Contains("global batch (per_device_train_batch_size × ranks) 3 × 2 → 6 × 1", resumed.Out);
        AssertSameAsReference(Path.Combine(fixture.Root, $"{name}-resumed-on-1"), resumed.Out);
    }

    /// <summary>The decoder frozen, rank-4 LoRA on its attention and the token embeddings training (the
    /// DeepSpeed-VisualChat split): what ZeRO-3 partitions is the frozen base weights.</summary>
    const string FrozenDecoder = "\"unfreeze\": [], \"lora_dim\": 4, \"lora_module_name\": [\"self_attn\"]";

    [Fact]
    public void ZeroStage3KeepsHalfTheFrozenLayersOnEachRankAndTrainsTheSameTensorsAsOneProcess()
    {
        var reference = Cli("train", "--config", fixture.Config("np1-frozen", perDevice: 6, extra: FrozenDecoder));
        Assert.True(reference.Code == 0, reference.Err + reference.Out);
        var referenceDir = Path.Combine(fixture.Root, "np1-frozen");

        // The last global batch leaves rank 1 without a sample: it still joins every layer's gather, in the forward,
        // in the backward's recomputation and in the evaluation.
        var (code, output) = RunMpi(2, "train", "--config", fixture.Config("np2-zero3", perDevice: 3, zeroStage: 3, extra: FrozenDecoder));
        Assert.True(code == 0, output);
        var runDir = Path.Combine(fixture.Root, "np2-zero3");
        AssertSameAs(referenceDir, runDir, output);
        var partitioned = Regex.Match(output, @"ZeRO-3: frozen decoder weights partitioned over 2 ranks: ([\d,]+) of ([\d,]+) elements");
        Assert.True(partitioned.Success, output);
        long kept = long.Parse(partitioned.Groups[1].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture);
        long total = long.Parse(partitioned.Groups[2].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture);
        // Each layer's chunk is rounded up to a whole element: at most one element of padding per layer.
        Assert.InRange(kept * 2 - total, 0, 2);
        Assert.Contains("ZeRO-3: frozen decoder weights partitioned", File.ReadAllText(Path.Combine(runDir, "rank-1.log")));
        // The tiny model is stored in fp32: each rank maps the weights rather than copying the whole model.
        Assert.Contains("memory-mapped the weights of", output);

        // 2 → 1 and 1 → 2: checkpoints keep the single-process layout whatever the stage.
        var resumed = Cli("train", "--config", fixture.Config("np2-zero3-resumed-on-1", perDevice: 6, zeroStage: 3, extra: FrozenDecoder),
            "--resume", Path.Combine(runDir, "epoch-1"));
        Assert.True(resumed.Code == 0, resumed.Err + resumed.Out);
        AssertSameAs(referenceDir, Path.Combine(fixture.Root, "np2-zero3-resumed-on-1"), resumed.Out);
        (code, output) = RunMpi(2, "train", "--config", fixture.Config("np1-resumed-on-2-zero3", perDevice: 3, zeroStage: 3, extra: FrozenDecoder),
            "--resume", Path.Combine(referenceDir, "epoch-1"));
        Assert.True(code == 0, output);
        AssertSameAs(referenceDir, Path.Combine(fixture.Root, "np1-resumed-on-2-zero3"), output);
    }

    [Fact]
    public void ZeroStage3WithNothingFrozenInTheLayersIsRefusedOnEveryRank()
    {
        var (code, output) = RunMpi(2, "train", "--config", fixture.Config("np2-zero3-all-trained", perDevice: 3, zeroStage: 3));
        Assert.Equal(2, code);
        Assert.Contains("use zero_stage 2", output);
    }

    [Fact]
    public void ZeroStage2ResumesAOneProcessCheckpointOnTwoRanks()
    {
        // 1 → 2 under ZeRO-2: the one-process epoch-1 moments are sliced to each rank's pieces, gradients are
        // reduce-scattered, and the gathered final state equals the one-process run's.
        var (code, output) = RunMpi(2, "train", "--config", fixture.Config("np2-zero2-resumed", perDevice: 3, zeroStage: 2),
            "--resume", Path.Combine(fixture.ReferenceRun, "epoch-1"));
        Assert.True(code == 0, output);
        Assert.Contains("resumed from", output);
        AssertSameAsReference(Path.Combine(fixture.Root, "np2-zero2-resumed"), output);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void TheVisualChatRecipeOnTwoRanksEqualsOneProcess(int zeroStage)
    {
        // Images go through the sharded loader: 22 training conversations in global batches of 4 leave rank 1 without
        // a sample in the last one, which the loader must pass over at its place in the plan. Under ZeRO-3 the frozen
        // LM's layers are gathered one at a time (MMCA, the projection and the token embeddings train).
        var root = Path.Combine(fixture.Root, $"visualchat-zero{zeroStage}");
        Assert.Equal(0, Cli("init-model", "--preset", "tiny", "--kind", "visualchat", "--out", Path.Combine(root, "model"), "--seed", "3").Code);
        Assert.Equal(0, Cli("data", "shapes", "--out", Path.Combine(root, "data"), "--train", "23", "--eval", "4").Code);
        File.WriteAllText(Path.Combine(root, "data.json"), new JsonObject {
            ["root"] = Path.Combine(root, "data"), ["eval_fraction"] = 0.15,
            ["datasets"] = new JsonArray(new JsonObject { ["name"] = "shapes", ["format"] = "jsonl", ["path"] = "train.jsonl" }),
        }.ToJsonString());
        string Config(string name, int perDevice)
        {
            var path = Path.Combine(root, name + ".json");
            File.WriteAllText(path, new JsonObject {
                ["model"] = new JsonObject { ["kind"] = "visualchat", ["path"] = Path.Combine(root, "model") },
                ["data_config"] = Path.Combine(root, "data.json"), ["output_dir"] = Path.Combine(root, name), ["precision"] = "fp32",
                ["per_device_train_batch_size"] = perDevice, ["per_device_eval_batch_size"] = 2, ["learning_rate"] = 1e-2, ["adam_beta1"] = 0.9,
                ["distributed"] = new JsonObject { ["zero_stage"] = zeroStage },
            }.ToJsonString());
            return path;
        }
        var single = Cli("train", "--config", Config("one", 4));
        Assert.True(single.Code == 0, single.Err + single.Out);
        Assert.Contains("22 train / 1 eval", single.Out);
        var (code, output) = RunMpi(2, "train", "--config", Config("two", 2));
        Assert.True(code == 0, output);
        double weights = MaxDifference(Path.Combine(root, "one", "final", CheckpointStore.WeightsFile), Path.Combine(root, "two", "final", CheckpointStore.WeightsFile));
        double moments = MaxDifference(Path.Combine(root, "one", "final", CheckpointStore.OptimizerFile), Path.Combine(root, "two", "final", CheckpointStore.OptimizerFile));
        log.WriteLine($"visualchat ZeRO-{zeroStage}: max |Δ| weights {weights:E2}, AdamW moments {moments:E2}");
        Assert.True(weights <= Tolerance && moments <= Tolerance, $"weights differ by {weights:E2}, moments by {moments:E2}\n{output}");
        Assert.Equal(TrainLosses(Path.Combine(root, "one")).Keys, TrainLosses(Path.Combine(root, "two")).Keys);
    }

    [Fact]
    public void BenchDistributedMeasuresEveryStageAgainstOneProcessAndMemcpy()
    {
        // As a user runs it: the vchat process starts mpirun and plain vchat runs itself.
        var host = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        var start = new ProcessStartInfo(host) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "vchat.dll"), "bench", "distributed", "--preset", "tiny", "--steps", "2",
                     "--seq-len", "16", "--allreduce-mb", "1", "--out", Path.Combine(fixture.Root, "bench") })
        {
            start.ArgumentList.Add(a);
        }
        var output = new StringBuilder();
        using var process = Process.Start(start)!;
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginErrorReadLine();
        var stdout = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(TimeSpan.FromSeconds(240)), stdout);
        process.WaitForExit();
        lock (output) Assert.True(process.ExitCode == 0, stdout + output);
        log.WriteLine(stdout);
        Assert.Matches(@"all-reduce of 1 MiB over 2 ranks: [0-9.]+ s .* memcpy of the same bytes: [0-9.]+ s .* all-reduce / memcpy time: [0-9.]+×", stdout);
        Assert.Matches(@"1 process +[0-9.]+ +1\.00 +\d+ +\d+ ", stdout);
        foreach (int stage in new[] { 0, 1, 2 })
        {
            Assert.Matches($@"2 ranks, ZeRO {stage} +[0-9.]+ +[0-9.]+ +\d+ / \d+ +\d+ / \d+ +[-+]?\d+ / [-+]?\d+ *\n", stdout);
        }
        // ZeRO 3 keeps half of the frozen decoder on each rank (one element of padding per layer at most).
        Assert.Matches(@"2 ranks, ZeRO 3 +[0-9.]+ +[0-9.]+ +\d+ / \d+ +\d+ / \d+ +[-+]?\d+ / [-+]?\d+ +50\.0 ?%", stdout);
    }

    [Fact]
    public void OneProcessNeverLoadsLibmpi()
    {
        // The fixture trained in this process without mpirun.
        Assert.DoesNotContain("libmpi", File.ReadAllText("/proc/self/maps"));
    }

    [Fact]
    public void AResumeThatChangesTheGlobalBatchIsRefused()
    {
        var refused = Cli("train", "--config", fixture.Config("np1-wrong-batch", perDevice: 3), "--resume", Path.Combine(fixture.ReferenceRun, "epoch-1"));
        Assert.Equal(2, refused.Code);
        Assert.Contains("per_device_train_batch_size 6 → 3", refused.Err);
        // Across rank counts the global batch is what is compared: 6 × 1 → 3 × 2 would be the same plan, 6 × 1 → 2 × 2 is not.
        var (code, output) = RunMpi(2, "train", "--config", fixture.Config("np2-wrong-batch", perDevice: 2), "--resume", Path.Combine(fixture.ReferenceRun, "epoch-1"));
        Assert.Equal(2, code);
        Assert.Contains("global batch (per_device_train_batch_size × ranks) 6 × 1 → 2 × 2", output);
    }

    [Fact]
    public void AKilledRankEndsTheJobWithinSeconds()
    {
        var name = "np2-killed";
        var runDir = Path.Combine(fixture.Root, name);
        var output = new StringBuilder();
        using var process = StartMpi(2, output, "train", "--config", fixture.Config(name, perDevice: 3, extra: "\"num_train_epochs\": 400, \"save_every_epochs\": 0"));
        try
        {
            var clock = Stopwatch.StartNew();
            var log = Path.Combine(runDir, "rank-1.log");
            int? pid = null;
            while (pid is null || !File.Exists(Path.Combine(runDir, "metrics.jsonl")) || TrainLosses(runDir).Count < 2)
            {
                if (process.HasExited) Assert.Fail($"mpirun ended (exit {process.ExitCode}) before training started:\n{output}");
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(90), $"training did not start within 90 s:\n{output}");
                Thread.Sleep(50);
                if (pid is null && File.Exists(log))
                {
                    foreach (var line in File.ReadAllLines(log))
                        if (line.Contains("pid ", StringComparison.Ordinal) && int.TryParse(line[(line.IndexOf("pid ", StringComparison.Ordinal) + 4)..].Split(',', ' ')[0], out var value)) pid = value;
                }
            }
            Assert.Equal(0, kill(pid.Value, 9));
            var killed = Stopwatch.StartNew();
            Assert.True(process.WaitForExit(TimeSpan.FromSeconds(20)), $"the job was still running 20 s after rank 1 was killed:\n{output}");
            process.WaitForExit();
            Assert.True(killed.Elapsed < TimeSpan.FromSeconds(10), $"the job took {killed.Elapsed.TotalSeconds:F1} s to end");
            Assert.NotEqual(0, process.ExitCode);
            lock (output) Assert.Contains("rank 1", output.ToString());
        }
        finally
        {
            if (!process.HasExited) { process.Kill(entireProcessTree: true); process.WaitForExit(); }
        }
    }

    [DllImport("libc", SetLastError = true)]
    static extern int kill(int pid, int signal);
}
