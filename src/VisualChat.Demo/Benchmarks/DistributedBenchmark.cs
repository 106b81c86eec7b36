using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using TorchSharp;
using VisualChat.Training.Distributed;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks;

/// <summary>
/// <c>vchat bench distributed</c>: what data parallelism costs and saves on this machine, from real <c>vchat train</c>
/// runs started the way users start them (a plain process, and <c>mpirun -np N</c> per ZeRO stage) on a randomly
/// initialised preset whose decoder is frozen and whose token embeddings train (the DeepSpeed-VisualChat split), plus
/// the all-reduce bandwidth of the MPI transport against a memcpy of the same bytes measured in the same job.
/// Every figure is a ratio against a baseline of the same run: tokens/s against the one-process run, peak memory
/// against ZeRO 0, all-reduce time against memcpy.
/// </summary>
public static partial class DistributedBenchmark
{
    public sealed record Options(string Preset, int Ranks, int Steps, int SequenceLength, IReadOnlyList<int> Stages, double AllReduceMb, string WorkDir);

    /// <param name="PeakMb">Per rank: the whole run's resident high-water mark (loading included).</param>
    /// <param name="StepPeakMb">Per rank: the high-water mark from the second step on (what each step needs).</param>
    /// <param name="FrozenElements">ZeRO-3: frozen decoder elements kept on rank 0, and the whole model's.</param>
    public sealed record RunRow(string Name, int Ranks, int? Stage, double TokensPerSecond, IReadOnlyList<double> PeakMb, IReadOnlyList<double> StepPeakMb,
        (long Kept, long Total)? FrozenElements);

    public sealed record AllReduceRow(int Ranks, long Bytes, double AllReduceSeconds, double MemcpySeconds);

    public sealed record Result(AllReduceRow AllReduce, IReadOnlyList<RunRow> Runs);

    /// <summary>Prepares the model and data, runs the all-reduce probe and the training runs, one at a time.</summary>
    public static Result Run(Options options, TextWriter log)
    {
        string mpirun = FindMpirun();
        if (!PeakMemory.Supported)
            throw new InvalidOperationException("bench distributed reads each rank's peak memory from /proc (Linux); this system has no /proc/self/clear_refs.");
        Directory.CreateDirectory(options.WorkDir);
        string tokenizer = Path.Combine(options.WorkDir, "tokenizer"), model = Path.Combine(options.WorkDir, "model-" + options.Preset);
        // The preset's weights with a small built-in tokenizer: the texts' ids are a subset of any vocabulary, and the
        // bench needs no downloaded LLaMA tokenizer.
        if (!Directory.Exists(tokenizer)) RunVchat(log, null, "init-model", "--preset", "tiny", "--kind", "lm", "--out", tokenizer);
        if (!Directory.Exists(model)) RunVchat(log, null, "init-model", "--preset", options.Preset, "--kind", "lm", "--out", model, "--seed", "1");
        string data = Path.Combine(options.WorkDir, "train.jsonl");
        int globalBatch = options.Ranks;
        // Enough long texts for every step (each is cut to the sequence length, so all steps see the same token count).
        File.WriteAllLines(data, Enumerable.Range(0, globalBatch * (options.Steps + 1)).Select(i =>
            new JsonObject { ["text"] = string.Join(' ', Enumerable.Range(0, 4 * options.SequenceLength).Select(k => $"word{(i * 31 + k * 7) % 97}")) }.ToJsonString()));

        log.WriteLine($"all-reduce of {options.AllReduceMb:G} MB over {options.Ranks} ranks…");
        var allReduce = ParseProbe(RunUnderMpi(log, mpirun, options.Ranks,
            "bench", "distributed", "--allreduce-mb", options.AllReduceMb.ToString(CultureInfo.InvariantCulture)), options.Ranks);

        var runs = new List<RunRow>();
        string Config(string name, int ranks, int stage)
        {
            var path = Path.Combine(options.WorkDir, name + ".json");
            var runDir = Path.Combine(options.WorkDir, "runs", name);
            if (Directory.Exists(runDir)) Directory.Delete(runDir, recursive: true);
            File.WriteAllText(path, new JsonObject {
                ["model"] = new JsonObject { ["kind"] = "llama-lm", ["path"] = model, ["tokenizer"] = tokenizer },
                ["train_data"] = data, ["eval_fraction"] = 0.0, ["output_dir"] = runDir, ["precision"] = "fp32",
                ["per_device_train_batch_size"] = globalBatch / ranks, ["gradient_accumulation_steps"] = 1, ["max_steps"] = options.Steps,
                ["max_seq_len"] = options.SequenceLength, ["learning_rate"] = 1e-4, ["log_every_steps"] = 1,
                ["save_final"] = false, ["save_every_epochs"] = 0, ["distributed"] = new JsonObject { ["zero_stage"] = stage },
            }.ToJsonString());
            return path;
        }

        log.WriteLine("1 process…");
        // One libtorch thread, as each rank gets on a machine shared by the ranks: the comparison is of parallelism
        // across processes, not of thread counts.
        var single = RunVchat(log, new Dictionary<string, string> { [VisualChat.Model.DevicePolicy.ThreadsVariable] = "1" },
            "train", "--config", Config("np1", 1, 0));
        runs.Add(ParseRun("1 process", 1, null, Path.Combine(options.WorkDir, "runs", "np1"), [single]));
        foreach (int stage in options.Stages)
        {
            string name = $"np{options.Ranks}-zero{stage}";
            log.WriteLine($"{options.Ranks} ranks, ZeRO {stage}…");
            var result = RunUnderMpi(log, mpirun, options.Ranks, "train", "--config", Config(name, options.Ranks, stage));
            var runDir = Path.Combine(options.WorkDir, "runs", name);
            var outputs = new List<string> { result };
            for (int rank = 1; rank < options.Ranks; rank++) outputs.Add(File.ReadAllText(Path.Combine(runDir, $"rank-{rank}.log")));
            runs.Add(ParseRun($"{options.Ranks} ranks, ZeRO {stage}", options.Ranks, stage, runDir, outputs));
        }
        return new Result(allReduce, runs);
    }

    /// <summary>The MPI side of the all-reduce measurement (run under mpirun by <see cref="Run"/>): every rank
    /// all-reduces the same float buffer, then copies it, best of <paramref name="repeats"/>; rank 0 prints the times.</summary>
    public static void Probe(MpiCommunicator communicator, double megabytes, int repeats, TextWriter output)
    {
        communicator.ShareCores();
        long count = Math.Max(communicator.Size, (long)(megabytes * 1024 * 1024 / sizeof(float)));
        using var buffer = ones(count, ScalarType.Float32);
        using var copy = empty(count, ScalarType.Float32);
        double Best(Action action)
        {
            double best = double.MaxValue;
            for (int i = 0; i <= repeats; i++)
            {
                communicator.Barrier();
                var clock = Stopwatch.StartNew();
                action();
                communicator.Barrier();
                // The first round pays for page faults on fresh buffers: it is a warm-up.
                if (i > 0) best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            return best;
        }
        double allReduce = Best(() => communicator.AllReduceSum(buffer));
        double memcpy = Best(() => copy.copy_(buffer));
        if (communicator.IsRoot)
            output.WriteLine(FormattableString.Invariant($"allreduce-probe ranks={communicator.Size} bytes={count * sizeof(float)} allreduce_s={allReduce:R} memcpy_s={memcpy:R}"));
    }

    static AllReduceRow ParseProbe(string output, int ranks)
    {
        var match = ProbeLine().Match(output);
        if (!match.Success) throw new InvalidOperationException($"the all-reduce probe printed no result:\n{output}");
        double Value(string group) => double.Parse(match.Groups[group].Value, CultureInfo.InvariantCulture);
        return new AllReduceRow(ranks, long.Parse(match.Groups["bytes"].Value, CultureInfo.InvariantCulture), Value("allreduce"), Value("memcpy"));
    }

    static RunRow ParseRun(string name, int ranks, int? stage, string runDir, IReadOnlyList<string> outputs)
    {
        var peaks = new List<double>();
        var stepPeaks = new List<double>();
        foreach (var text in outputs)
        {
            var match = PeakLine().Match(text);
            if (!match.Success) throw new InvalidOperationException($"{name}: a rank printed no peak RSS line:\n{text}");
            peaks.Add(double.Parse(match.Groups["peak"].Value, CultureInfo.InvariantCulture));
            stepPeaks.Add(double.Parse(match.Groups["step"].Value, CultureInfo.InvariantCulture));
        }
        (long, long)? frozen = null;
        if (ShardLine().Match(outputs[0]) is { Success: true } shard)
        {
            frozen = (long.Parse(shard.Groups["kept"].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture),
                long.Parse(shard.Groups["total"].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture));
        }
        // Steady-state throughput: the median step from the second on (the first pays for warm-up allocations).
        var rates = File.ReadLines(Path.Combine(runDir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!.AsObject())
            .Where(o => (string?)o["kind"] == "train" && o["step"]!.GetValue<long>() > 1 && o["tokens_per_s"] is not null)
            .Select(o => o["tokens_per_s"]!.GetValue<double>()).Order().ToList();
        if (rates.Count == 0) throw new InvalidOperationException($"{name}: {runDir}/metrics.jsonl has no step after the first; use --steps 2 or more.");
        return new RunRow(name, ranks, stage, rates[rates.Count / 2], peaks, stepPeaks, frozen);
    }

    [GeneratedRegex(@"allreduce-probe ranks=\d+ bytes=(?<bytes>\d+) allreduce_s=(?<allreduce>[0-9.eE+-]+) memcpy_s=(?<memcpy>[0-9.eE+-]+)")]
    private static partial Regex ProbeLine();

    [GeneratedRegex(@"peak RSS (?<peak>\d+) MB, (?<step>\d+) MB after the first step")]
    private static partial Regex PeakLine();

    [GeneratedRegex(@"ZeRO-3: frozen decoder weights partitioned over \d+ ranks: (?<kept>[\d,]+) of (?<total>[\d,]+) elements")]
    private static partial Regex ShardLine();

    static string FindMpirun()
    {
        foreach (var folder in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
            if (folder.Length > 0 && File.Exists(Path.Combine(folder, "mpirun"))) return Path.Combine(folder, "mpirun");
        throw new InvalidOperationException("mpirun was not found on PATH: install Open MPI (apt-get install openmpi-bin libopenmpi-dev).");
    }

    /// <summary>Runs <c>mpirun -np <paramref name="ranks"/> vchat ARGS</c>.</summary>
    static string RunUnderMpi(TextWriter log, string mpirun, int ranks, params string[] args)
    {
        // Open MPI refuses to start as root without --allow-run-as-root; --oversubscribe lets N exceed the core count.
        string[] options = Environment.UserName == "root" ? ["--allow-run-as-root", "--oversubscribe"] : ["--oversubscribe"];
        return RunProcess(log, mpirun, [.. options, "-np", ranks.ToString(CultureInfo.InvariantCulture), .. VchatCommand(), .. args], null);
    }

    /// <summary>This vchat, as a command line: the apphost or tool shim, or <c>dotnet vchat.dll</c>.</summary>
    static string[] VchatCommand()
    {
        var process = Environment.ProcessPath ?? "dotnet";
        var entry = Assembly.GetEntryAssembly()?.Location;
        if (Path.GetFileNameWithoutExtension(process) != "dotnet") return [process];
        if (entry is null || Path.GetFileNameWithoutExtension(entry) != "vchat")
            throw new InvalidOperationException("bench distributed starts vchat processes and must itself run as vchat (the tool, the apphost or 'dotnet vchat.dll').");
        return [process, entry];
    }

    static string RunVchat(TextWriter log, IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var vchat = VchatCommand();
        return RunProcess(log, vchat[0], [.. vchat[1..], .. args], environment);
    }

    /// <summary>Longest a single run may take: a hung collective must end the bench, not hang it.</summary>
    static readonly TimeSpan ProcessTimeout = TimeSpan.FromMinutes(30);

    /// <summary>Runs a process to its end and returns its output (stdout and stderr); a failure throws, its output logged.</summary>
    static string RunProcess(TextWriter log, string file, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (key, value) in environment ?? new Dictionary<string, string>()) start.Environment[key] = value;
        var output = new StringBuilder();
        Process process;
        try { process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {file}"); }
        catch (System.ComponentModel.Win32Exception e) { throw new InvalidOperationException($"could not start {file}: {e.Message}"); }
        using var _ = process;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(ProcessTimeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            lock (output) log.WriteLine(output.ToString());
            throw new InvalidOperationException($"'{file} {string.Join(' ', start.ArgumentList)}' did not end within {ProcessTimeout.TotalMinutes:F0} minutes and was killed (its output is above).");
        }
        process.WaitForExit();
        string text;
        lock (output) text = output.ToString();
        if (process.ExitCode != 0)
        {
            log.WriteLine(text);
            throw new InvalidOperationException($"'{file} {string.Join(' ', start.ArgumentList)}' failed with exit code {process.ExitCode} (its output is above).");
        }
        return text;
    }
}
