using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using VisualChat.Cli.Commands;
using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Training;
using VisualChat.Tests.Model;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Tests.Robustness;

/// <summary>A tiny VisualChat model and shapes conversations shared by the fault suite (each test copies the data it damages).</summary>
public sealed class FaultSuiteFixture : IDisposable
{
    readonly TempFolder _root = new();
    public string Root => _root.Path;
    public string ModelFolder => Path.Combine(Root, "model");
    string DataTemplate => Path.Combine(Root, "data-template");
    int _workspaces;

    public FaultSuiteFixture()
    {
        using (var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 3)) model.Save(ModelFolder);
        new ShapesConversationGenerator(2).WriteJsonl(DataTemplate, "train.jsonl", 0, 24);
    }

    /// <summary>A fresh folder with its own copy of the shapes data and <c>data.json</c> (20 % eval).</summary>
    public string Workspace(double maxSkipFraction = 0.5)
    {
        var folder = Path.Combine(Root, $"ws{Interlocked.Increment(ref _workspaces)}");
        CopyFolder(DataTemplate, Path.Combine(folder, "data"));
        File.WriteAllText(Path.Combine(folder, "data.json"),
            $$"""{"root": "data", "eval_fraction": 0.2, "max_skip_fraction": {{maxSkipFraction.ToString(System.Globalization.CultureInfo.InvariantCulture)}}, "datasets": [{"name": "shapes", "format": "jsonl", "path": "train.jsonl"}]}""");
        return folder;
    }

    /// <summary>A training config in <paramref name="workspace"/>: tiny model, batch size 1, run dir <c>run</c>.</summary>
    public string Config(string workspace, string extra = "", string? modelPath = null, string? dataConfig = null, string? outputDir = null)
    {
        var path = Path.Combine(workspace, "train.json");
        var json = new JsonObject {
            ["model"] = new JsonObject { ["kind"] = "visualchat", ["path"] = modelPath ?? ModelFolder },
            ["data_config"] = dataConfig ?? Path.Combine(workspace, "data.json"),
            ["output_dir"] = outputDir ?? Path.Combine(workspace, "run"),
            ["per_device_train_batch_size"] = 1, ["per_device_eval_batch_size"] = 1, ["max_steps"] = 4,
            ["learning_rate"] = 0.01, ["log_every_steps"] = 1,
        };
        foreach (var (key, value) in JsonNode.Parse("{" + extra.TrimStart(',') + "}")!.AsObject().ToList())
            json[key] = value?.DeepClone();
        File.WriteAllText(path, json.ToJsonString());
        return path;
    }

    public static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    public void Dispose() => _root.Dispose();
}

/// <summary>
/// The fault suite of issue 17: what clusters and users do to training runs and model folders (SIGTERM, SIGHUP, kill -9,
/// bad images anywhere, interrupted exports, divergence, changed configs, damaged files). Signal and kill cases run the
/// built <c>vchat</c> in a child process; the rest call the same commands in-process.
/// </summary>
public sealed class FaultSuiteTests(FaultSuiteFixture fixture) : IClassFixture<FaultSuiteFixture>
{
    const int SIGHUP = 1, SIGKILL = 9, SIGTERM = 15;
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(120);

    // ---------- harness ----------

    static InProcessVchat.Result Cli(params string[] args) => InProcessVchat.Run(args);

    sealed class Child : IDisposable
    {
        readonly StringBuilder _out = new(), _err = new();
        public Process Process { get; }
        public Child(string workingDirectory, IEnumerable<string> args)
        {
            var host = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
            var start = new ProcessStartInfo(host) {
                WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "vchat.dll"));
            foreach (var a in args) start.ArgumentList.Add(a);
            Process = Process.Start(start)!;
            Process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_out) _out.AppendLine(e.Data); };
            Process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_err) _err.AppendLine(e.Data); };
            Process.BeginOutputReadLine();
            Process.BeginErrorReadLine();
        }
        public string Out { get { lock (_out) return _out.ToString(); } }
        public string Err { get { lock (_err) return _err.ToString(); } }
        public void Signal(int signal) => Assert.Equal(0, kill(Process.Id, signal));
        public int Wait()
        {
            if (!Process.WaitForExit(Patience)) { Process.Kill(); Assert.Fail($"vchat did not exit within {Patience}.\n{Out}\n{Err}"); }
            Process.WaitForExit();
            return Process.ExitCode;
        }
        public void Dispose()
        {
            if (!Process.HasExited) { Process.Kill(); Process.WaitForExit(); }
            Process.Dispose();
        }
    }

    [DllImport("libc", SetLastError = true)]
    static extern int kill(int pid, int signal);

    sealed record MetricsLine(string Kind, long Step, long SkippedSamples, double? EvalLoss);

    /// <summary>metrics.jsonl as written so far (a line being appended is ignored).</summary>
    static List<MetricsLine> Metrics(string runDir)
    {
        var path = Path.Combine(runDir, "metrics.jsonl");
        if (!File.Exists(path)) return [];
        var list = new List<MetricsLine>();
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        while (reader.ReadLine() is { } line)
        {
            try
            {
                if (line.Length == 0 || JsonNode.Parse(line) is not JsonObject o) continue;
                list.Add(new MetricsLine(o["kind"]?.GetValue<string>() ?? "train", o["step"]?.GetValue<long>() ?? 0,
                    o["skipped_samples"]?.GetValue<long>() ?? 0, o["eval_loss"]?.GetValue<double>()));
            }
            catch (System.Text.Json.JsonException) { }
        }
        return list;
    }

    static long LastTrainStep(string runDir) => Metrics(runDir).Where(m => m.Kind == "train").Select(m => m.Step).DefaultIfEmpty(0).Max();

    static void WaitForStep(Child child, string runDir, long step)
    {
        var clock = Stopwatch.StartNew();
        while (LastTrainStep(runDir) < step)
        {
            if (child.Process.HasExited) Assert.Fail($"vchat exited ({child.Process.ExitCode}) before step {step}.\n{child.Out}\n{child.Err}");
            if (clock.Elapsed > Patience) Assert.Fail($"no step {step} within {Patience}.\n{child.Out}\n{child.Err}");
            Thread.Sleep(20);
        }
    }

    /// <summary>Bytes in temporary or replaced folders (what a killed writer left half-done).</summary>
    static long LeftoverBytes(string folder) => Directory.GetDirectories(folder)
        .Where(d => Path.GetFileName(d).Contains(".tmp-", StringComparison.Ordinal) || Path.GetFileName(d).Contains(".old-", StringComparison.Ordinal))
        .Sum(d => Directory.GetFiles(d, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) + 1);

    static void AssertOneLineError(InProcessVchat.Result result, string mustContain)
    {
        var lines = result.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.True(lines.Length == 1, $"expected one error line, got:\n{result.Err}");
        Assert.Contains(mustContain, lines[0]);
        Assert.DoesNotContain("   at ", result.Err);
    }

    /// <summary>The eval-side conversations of a workspace's data (the split is a hash of each record).</summary>
    static IReadOnlyList<Conversation> EvalConversations(string workspace) =>
        DataMixer.Build(DataConfig.Load(Path.Combine(workspace, "data.json")), 1).Eval;

    static string FirstImage(Conversation conversation) => ((FileImageRef)conversation.Images.First()).Path;

    // ---------- 1. a bad image anywhere is skipped and counted ----------

    [Fact]
    public void Case1_UndecodableTrainImage_WithBatchSize1_IsSkippedAndCountedEverywhere()
    {
        var ws = fixture.Workspace();
        File.WriteAllText(Path.Combine(ws, "data", "images", "bad.png"), "x");
        File.AppendAllText(Path.Combine(ws, "data", "train.jsonl"),
            """{"id":"bad-record","rounds":[{"images":["images/bad.png"],"question":"What colour is the shape in image 1?","answer":"red"}]}""" + "\n");
        // Enough steps to go through every training sample once.
        var result = Cli("train", "--config", fixture.Config(ws, "\"max_steps\": 0"));
        Assert.True(result.Code == 0, result.Out + result.Err);
        Assert.Contains("1 unloadable samples", result.Out);
        var run = Path.Combine(ws, "run");
        Assert.Equal(1, Metrics(run).Last().SkippedSamples);
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "final", CheckpointStore.StateFile)))!;
        Assert.Equal(1, state["skipped_sample_count"]!.GetValue<int>());
        Assert.Contains("bad-record", state["skipped_samples"]![0]!.GetValue<string>());
        Assert.Contains("train.jsonl", state["skipped_samples"]![0]!.GetValue<string>());
    }

    [Fact]
    public void Case1_UndecodableEvalImage_AtTheStep0Evaluation_IsSkippedAndCounted()
    {
        var ws = fixture.Workspace();
        var victim = EvalConversations(ws)[0];
        File.WriteAllText(FirstImage(victim), "x");
        var result = Cli("train", "--config", fixture.Config(ws, "\"max_steps\": 2"));
        Assert.True(result.Code == 0, result.Out + result.Err);
        var evals = Metrics(Path.Combine(ws, "run")).Where(m => m.Kind == "eval").ToList();
        Assert.NotEmpty(evals);
        Assert.Equal(1, evals[0].SkippedSamples);
        Assert.True(evals[0].EvalLoss is { } loss && double.IsFinite(loss));
        Assert.Contains(victim.SourceIds[0].Record, result.Out);
    }

    [Fact]
    public void Case1_MoreUnloadableSamplesThanMaxSkipFraction_StopsWithOneLineNamingTheSetting()
    {
        var ws = fixture.Workspace(maxSkipFraction: 0.05);
        foreach (var image in Directory.GetFiles(Path.Combine(ws, "data", "images")).Order().Take(12)) File.WriteAllText(image, "x");
        var result = Cli("train", "--config", fixture.Config(ws, "\"max_steps\": 0"));
        Assert.Equal(1, result.Code);
        AssertOneLineError(result, "max_skip_fraction");
        Assert.False(Directory.Exists(Path.Combine(ws, "run", "final")));
    }

    [Fact]
    public void Case1_DataInspect_DecodesImages_AndExitsNonZeroWhenTrainingWouldStop()
    {
        var ws = fixture.Workspace(maxSkipFraction: 0.01);
        var bad = Directory.GetFiles(Path.Combine(ws, "data", "images")).Order().First();
        File.WriteAllText(bad, "x");
        using var child = new Child(ws, ["data", "inspect", "--config", Path.Combine(ws, "data.json"), "--samples", "0"]);
        int code = child.Wait();
        Assert.True(code != 0, child.Out + child.Err);
        Assert.Contains("Undecodable images: 1", child.Out);
        Assert.Contains("training would stop", child.Out);
    }

    [Fact]
    public void Case1_LlamaLmText_BadJsonLineIsSkippedAndCounted()
    {
        var path = Path.Combine(fixture.Root, $"texts-{Guid.NewGuid():N}.jsonl");
        File.WriteAllText(path, "{\"text\": \"a red square\"}\n{not json\n{\"text\": \"a blue circle\"}\n");
        var tokenizer = VisualChatPresets.CreateTinyTokenizer();
        var skipped = new List<string>();
        int records = 0;
        var samples = TextLmData.ReadJsonl(path, tokenizer, 64, skipped, n => records = n);
        Assert.Equal(2, samples.Count);
        Assert.Equal(3, records);
        Assert.Single(skipped);
        Assert.Contains($"{path}:2", skipped[0]);
    }

    // ---------- 2. SIGTERM and SIGHUP ----------

    [Theory]
    [InlineData(SIGTERM, 143)]
    [InlineData(SIGHUP, 129)]
    public void Case2_TerminationSignal_FinishesTheStep_WritesLatest_AndLosesNoStep(int signal, int expectedExit)
    {
        var ws = fixture.Workspace();
        var run = Path.Combine(ws, "run");
        // No epoch checkpoints and far more steps than the test waits for: only the signal can produce latest/.
        var config = fixture.Config(ws, "\"max_steps\": 0, \"num_train_epochs\": 1000, \"save_every_epochs\": 0, \"save_final\": false");
        using var child = new Child(ws, ["train", "--config", config]);
        WaitForStep(child, run, 3);
        child.Signal(signal);
        int code = child.Wait();
        Assert.True(code == expectedExit, $"exit {code}\n{child.Out}\n{child.Err}");
        var latest = CheckpointStore.TryRead(Path.Combine(run, "latest"));
        Assert.NotNull(latest);
        Assert.Equal(LastTrainStep(run), latest.Step);   // work lost: 0 steps
        Assert.Equal(0, LeftoverBytes(run));
        Assert.Contains("interrupted", child.Out);
    }

    [Fact]
    public void Case2_SecondSignalWhileCheckpointing_AbortsWithoutDamagingTheLastCompleteCheckpoint()
    {
        var ws = fixture.Workspace();
        var run = Path.Combine(ws, "run");
        var config = fixture.Config(ws, "\"max_steps\": 0, \"num_train_epochs\": 1000, \"save_every_steps\": 1, \"save_final\": false");
        using (var child = new Child(ws, ["train", "--config", config]))
        {
            WaitForStep(child, run, 3);
            child.Signal(SIGTERM);
            child.Signal(SIGTERM);
            Assert.NotEqual(0, child.Wait());
        }
        // Every checkpoint still listed is complete and loads; the next run cleans what the abort left.
        using var resumed = TrainingRunFactory.Create(TrainingConfig.Load(config, ["resume=auto"]));
        Assert.Equal(0, LeftoverBytes(run));
        var latest = CheckpointStore.Latest(run);
        Assert.NotNull(latest);
        Assert.True(latest.Step >= 2);
        ((Trainer<VisualChatTrainingBatch>)resumed.Trainer).Restore(latest.Path);
    }

    [Fact]
    public void Case2_KillNineDuringCheckpointing_RepeatedThreeTimes_ResumesFromTheNewestCompleteCheckpoint()
    {
        var ws = fixture.Workspace();
        var run = Path.Combine(ws, "run");
        var config = fixture.Config(ws, "\"max_steps\": 0, \"num_train_epochs\": 1000, \"save_every_steps\": 1, \"save_final\": false");
        long reached = 0;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            using var child = new Child(ws, attempt == 0 ? ["train", "--config", config] : ["train", "--config", config, "--resume", "auto"]);
            WaitForStep(child, run, reached + 2);
            child.Signal(SIGKILL);
            child.Wait();
            var newest = CheckpointStore.Latest(run);
            Assert.NotNull(newest);
            Assert.True(newest.Step >= reached, $"attempt {attempt}: resumed behind the last complete checkpoint ({newest.Step} < {reached})");
            // Work lost to kill -9 is bounded by save_every_steps (1 here): at most the step being checkpointed.
            Assert.InRange(LastTrainStep(run) - newest.Step, 0, 1);
            reached = newest.Step;
        }
        using var resumed = TrainingRunFactory.Create(TrainingConfig.Load(config, ["resume=auto"]));
        Assert.Equal(0, LeftoverBytes(run));
    }

    // ---------- 3. interrupted export, mixed or truncated model folders ----------

    string TrainedCheckpoint(string ws)
    {
        var result = Cli("train", "--config", fixture.Config(ws, "\"max_steps\": 2, \"learning_rate\": 0.5"));
        Assert.True(result.Code == 0, result.Out + result.Err);
        return Path.Combine(ws, "run", "final");
    }

    static Dictionary<string, Tensor> State(string folder)
    {
        using var model = VisualChatModel.Load(folder);
        return model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
    }

    static bool Same(Dictionary<string, Tensor> a, Dictionary<string, Tensor> b) =>
        a.Keys.Order().SequenceEqual(b.Keys.Order()) && a.All(kv => kv.Value.equal(b[kv.Key]).all().item<bool>());

    [Fact]
    public void Case3_KilledExport_LeavesTheOldModelOrTheNewOne_NeverAMix()
    {
        var ws = fixture.Workspace();
        var checkpoint = TrainedCheckpoint(ws);
        var reference = Path.Combine(ws, "exported-reference");
        CheckpointExport.Export(checkpoint, reference);
        var newState = State(reference);
        var oldState = State(fixture.ModelFolder);
        Assert.False(Same(newState, oldState));

        var target = Path.Combine(ws, "deployed");
        FaultSuiteFixture.CopyFolder(fixture.ModelFolder, target);
        // The trained embeddings are written before the projection: kill right after they are, in the target (a
        // writer working in place) or in a temporary sibling.
        var embeddings = Path.Combine(target, VisualChatModel.EmbeddingsFile);
        var stamp = File.GetLastWriteTimeUtc(embeddings);
        using (var child = new Child(ws, ["export", "--checkpoint", checkpoint, "--out", target]))
        {
            var clock = Stopwatch.StartNew();
            while (!child.Process.HasExited && clock.Elapsed < Patience)
            {
                bool written = File.GetLastWriteTimeUtc(embeddings) != stamp
                    || Directory.GetDirectories(ws, "deployed.tmp-*").Any(t => File.Exists(Path.Combine(t, VisualChatModel.EmbeddingsFile)));
                if (written) { child.Signal(SIGKILL); break; }
            }
            child.Wait();
        }
        var state = State(target);
        Assert.True(Same(state, oldState) || Same(state, newState), "the target folder mixes the old and the new model");
        // The next write of the target cleans what the kill left (0 bytes of half-written output remain).
        ModelFolderWriter.Recover(target);
        Assert.Equal(0, LeftoverBytes(ws));
    }

    [Fact]
    public void Case3_MixedOrTruncatedModelFolder_IsRefusedNamingTheFile()
    {
        var ws = fixture.Workspace();
        var checkpoint = TrainedCheckpoint(ws);
        var exported = Path.Combine(ws, "exported");
        CheckpointExport.Export(checkpoint, exported);

        var mixed = Path.Combine(ws, "mixed");
        FaultSuiteFixture.CopyFolder(exported, mixed);
        File.Copy(Path.Combine(fixture.ModelFolder, VisualChatModel.ProjectionFile), Path.Combine(mixed, VisualChatModel.ProjectionFile), overwrite: true);
        var error = Assert.Throws<InvalidDataException>(() => VisualChatModel.Load(mixed));
        Assert.Contains(VisualChatModel.ProjectionFile, error.Message);

        var truncated = Path.Combine(ws, "truncated");
        FaultSuiteFixture.CopyFolder(exported, truncated);
        var embeddings = Path.Combine(truncated, VisualChatModel.EmbeddingsFile);
        using (var stream = new FileStream(embeddings, FileMode.Open)) stream.SetLength(stream.Length - 8);
        error = Assert.Throws<InvalidDataException>(() => VisualChatModel.Load(truncated));
        Assert.Contains(VisualChatModel.EmbeddingsFile, error.Message);
    }

    // ---------- 4. divergence ----------

    [Fact]
    public void Case4_OnNanSkip_WithAHugeLearningRate_FailsAsDiverged_AndWritesNoFinalOrBest()
    {
        var ws = fixture.Workspace();
        var result = Cli("train", "--config", fixture.Config(ws, "\"max_steps\": 0, \"learning_rate\": 1e30, \"on_nan\": \"skip\""));
        Assert.True(result.Code == 3, $"exit {result.Code}\n{result.Out}\n{result.Err}");
        Assert.Contains("diverged", result.Err);
        Assert.False(Directory.Exists(Path.Combine(ws, "run", "final")));
        Assert.False(Directory.Exists(Path.Combine(ws, "run", "best")));
    }

    // ---------- 5. resume with a changed config ----------

    [Fact]
    public void Case5_ResumeWithAChangedBatchSize_IsRefusedListingTheDifference_UnlessForced()
    {
        var ws = fixture.Workspace();
        var config = fixture.Config(ws, "\"max_steps\": 2, \"per_device_train_batch_size\": 2, \"save_every_steps\": 1");
        Assert.Equal(0, Cli("train", "--config", config).Code);

        var refused = Cli("train", "--config", config, "--resume", "auto", "--set", "per_device_train_batch_size=4");
        Assert.Equal(2, refused.Code);
        AssertOneLineError(refused, "per_device_train_batch_size 2 → 4");

        var harmless = Cli("train", "--config", config, "--resume", "auto", "--set", "log_every_steps=5");
        Assert.True(harmless.Code == 0, harmless.Out + harmless.Err);
        Assert.Contains("changed settings (allowed): log_every_steps 1 → 5", harmless.Out);

        var forced = Cli("train", "--config", config, "--resume", "auto", "--set", "per_device_train_batch_size=4", "--resume-force");
        Assert.True(forced.Code == 0, forced.Out + forced.Err);
        Assert.Contains("forced despite changed settings", forced.Out);
    }

    // ---------- 6. the smaller ones ----------

    [Fact]
    public void Case6_CorruptTrainerState_IsAOneLineErrorNamingTheFile()
    {
        var ws = fixture.Workspace();
        var config = fixture.Config(ws, "\"max_steps\": 2, \"save_every_steps\": 1");
        Assert.Equal(0, Cli("train", "--config", config).Code);
        File.WriteAllText(Path.Combine(ws, "run", "latest", CheckpointStore.StateFile), "{\"global_step\": ");
        File.WriteAllText(Path.Combine(ws, "run", "final", CheckpointStore.StateFile), "{\"global_step\": ");
        var result = Cli("train", "--config", config, "--resume", "auto");
        Assert.NotEqual(0, result.Code);
        AssertOneLineError(result, CheckpointStore.StateFile);
    }

    [Fact]
    public void Case6_MaxPositionEmbeddingsZero_IsAOneLineErrorNamingTheKey()
    {
        var ws = fixture.Workspace();
        var model = Path.Combine(ws, "model");
        FaultSuiteFixture.CopyFolder(fixture.ModelFolder, model);
        File.Delete(Path.Combine(model, ModelFolderWriter.ManifestFile));   // hand-edited folder
        var lmConfig = Path.Combine(model, VisualChatModel.LmFolder, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(lmConfig))!;
        json["max_position_embeddings"] = 0;
        File.WriteAllText(lmConfig, json.ToJsonString());
        var result = Cli("train", "--config", fixture.Config(ws, modelPath: model));
        Assert.NotEqual(0, result.Code);
        AssertOneLineError(result, "max_position_embeddings");
        Assert.Contains("config.json", result.Err);
    }

    [Fact]
    public void Case6_KillBetweenTheTwoRenames_ResumesFromTheCompleteNewerCopy_AndOrphansAreRemoved()
    {
        var ws = fixture.Workspace();
        var run = Path.Combine(ws, "run");
        var config = fixture.Config(ws, "\"max_steps\": 3, \"save_every_steps\": 1, \"save_final\": false");
        Assert.Equal(0, Cli("train", "--config", config).Code);
        // A kill between "latest → latest.old-*" and "latest.tmp-* → latest": only the two side copies exist.
        FaultSuiteFixture.CopyFolder(Path.Combine(run, "latest"), Path.Combine(run, "latest.old-0123"));
        var old = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "latest.old-0123", CheckpointStore.ManifestFile)))!;
        old["step"] = 2;
        File.WriteAllText(Path.Combine(run, "latest.old-0123", CheckpointStore.ManifestFile), old.ToJsonString());
        Directory.Move(Path.Combine(run, "latest"), Path.Combine(run, "latest.tmp-4567"));
        // An older, complete "best" and an incomplete orphan of another killed write.
        FaultSuiteFixture.CopyFolder(Path.Combine(run, "latest.old-0123"), Path.Combine(run, "best"));
        Directory.CreateDirectory(Path.Combine(run, "epoch-1.tmp-89ab"));
        File.WriteAllText(Path.Combine(run, "epoch-1.tmp-89ab", CheckpointStore.WeightsFile), "half");

        var result = Cli("train", "--config", config, "--resume", "auto");
        Assert.True(result.Code == 0, result.Out + result.Err);
        Assert.Contains($"resumed from {Path.Combine(run, "latest")} at step 3", result.Out);
        Assert.Equal(0, LeftoverBytes(run));
    }

    [Fact]
    public void Case6_IntegerTensorWhereFloatIsExpected_IsRefused()
    {
        var folder = Path.Combine(fixture.Root, $"weights-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        using var linear = nn.Linear(3, 2);
        var ints = Path.Combine(folder, "ints.safetensors");
        TensorFiles.SaveSafetensors(ints, [new("weight", ones(2, 3, ScalarType.Int32)), new("bias", zeros(2))]);
        var error = Assert.Throws<InvalidDataException>(() => { using var source = TensorFiles.Open(ints); StateDict.Load(linear, source); });
        Assert.Contains("'weight'", error.Message);
        Assert.Contains("Int32", error.Message);
    }

    [Fact]
    public void Case6_NonFiniteWeights_Warn()
    {
        var folder = Path.Combine(fixture.Root, $"weights-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        using var linear = nn.Linear(3, 2);
        var nan = Path.Combine(folder, "nan.safetensors");
        using var weight = ones(2, 3);
        weight[0, 0] = tensor(float.NaN);
        TensorFiles.SaveSafetensors(nan, [new("weight", weight), new("bias", zeros(2))]);
        var warnings = new List<string>();
        var previous = StateDict.Warn;
        StateDict.Warn = warnings.Add;
        try
        {
            using var source = TensorFiles.Open(nan);
            var report = StateDict.Load(linear, source);
            Assert.Equal(["weight"], report.NonFinite);
        }
        finally { StateDict.Warn = previous; }
        Assert.Contains(warnings, w => w.Contains("NaN") && w.Contains("nan.safetensors"));
    }

    [Fact]
    public void Case6_ImageStdOfZero_IsRefusedNamingTheKey()
    {
        var ws = fixture.Workspace();
        var model = Path.Combine(ws, "model");
        FaultSuiteFixture.CopyFolder(fixture.ModelFolder, model);
        File.Delete(Path.Combine(model, ModelFolderWriter.ManifestFile));
        var preprocessor = Path.Combine(model, VisualChatModel.VisionFolder, VisualChatModel.PreprocessorFile);
        var json = JsonNode.Parse(File.ReadAllText(preprocessor))!;
        json["image_std"] = new JsonArray(0.0, 0.0, 0.0);
        File.WriteAllText(preprocessor, json.ToJsonString());
        var error = Assert.Throws<InvalidDataException>(() => VisualChatModel.Load(model));
        Assert.Contains("image_std", error.Message);
    }

    [Fact]
    public void Case6_NewRunIntoAUsedOutputDir_IsRefused_OverwriteStartsCleanMetrics()
    {
        var ws = fixture.Workspace();
        var config = fixture.Config(ws, "\"max_steps\": 2");
        Assert.Equal(0, Cli("train", "--config", config).Code);
        var again = Cli("train", "--config", config);
        Assert.Equal(2, again.Code);
        AssertOneLineError(again, "--overwrite");
        var overwritten = Cli("train", "--config", config, "--overwrite");
        Assert.True(overwritten.Code == 0, overwritten.Out + overwritten.Err);
        Assert.Equal([1L, 2L], Metrics(Path.Combine(ws, "run")).Where(m => m.Kind == "train").Select(m => m.Step).ToArray());
    }

    [Fact]
    public void Case6_UnexpectedExceptionInAnyCommand_IsOneLine_StackOnlyWithVerbose()
    {
        var ws = fixture.Workspace();
        var conversations = Path.Combine(ws, "conversations.json");
        File.WriteAllText(conversations, "[]");   // an array where the command expects an object
        string[] args = ["eval", "--model", fixture.ModelFolder, "--conversations", conversations, "--out", Path.Combine(ws, "answers.csv")];
        using (var child = new Child(ws, args))
        {
            Assert.Equal(1, child.Wait());
            var lines = child.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(lines.Length == 1 && lines[0].StartsWith("vchat eval: ", StringComparison.Ordinal), child.Err);
        }
        using (var verbose = new Child(ws, [.. args, "--verbose"]))
        {
            Assert.Equal(1, verbose.Wait());
            Assert.Contains("   at ", verbose.Err);
        }
    }

    [Fact]
    public void Case6_ExportFromAnotherWorkingDirectory_FindsTheBaseModel()
    {
        var ws = fixture.Workspace();
        // Relative paths, as a user writes them next to their data.
        var config = fixture.Config(ws, "\"max_steps\": 1", modelPath: Path.GetRelativePath(ws, fixture.ModelFolder), dataConfig: "data.json", outputDir: "run");
        using (var train = new Child(ws, ["train", "--config", config]))
            Assert.True(train.Wait() == 0, train.Out + train.Err);
        // Two levels down, so the run's relative model path resolves to nothing there.
        var elsewhere = Directory.CreateDirectory(Path.Combine(fixture.Root, $"elsewhere-{Guid.NewGuid():N}", "deeper")).FullName;
        using var export = new Child(elsewhere, ["export", "--checkpoint", Path.Combine(ws, "run", "final"), "--out", Path.Combine(ws, "exported")]);
        Assert.True(export.Wait() == 0, export.Out + export.Err);
        using var model = VisualChatModel.Load(Path.Combine(ws, "exported"));
    }
}
