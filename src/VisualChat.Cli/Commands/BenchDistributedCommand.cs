using System.CommandLine;
using System.Globalization;
using VisualChat.Benchmarks;
using VisualChat.Training.Distributed;

namespace VisualChat.Cli.Commands;

/// <summary>
/// <c>vchat bench distributed</c>: all-reduce bandwidth against memcpy, tokens/s of N ranks against one process, and
/// per-rank peak memory per ZeRO stage against ZeRO 0 (see <see cref="DistributedBenchmark"/>). Started under mpirun
/// (as it starts itself for the all-reduce measurement) it is that measurement.
/// </summary>
public static class BenchDistributedCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "Language-model preset (random weights; the decoder frozen, the token embeddings trained).", DefaultValueFactory = _ => "llama-100m" };
        var ranks = new Option<int>("--ranks") { Description = "Ranks of the mpirun runs (global batch = ranks sequences).", DefaultValueFactory = _ => 2 };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps per run (the median from the second on is reported).", DefaultValueFactory = _ => 4 };
        var length = new Option<int>("--seq-len") { Description = "Tokens per sequence.", DefaultValueFactory = _ => 64 };
        var stages = new Option<string>("--stages") { Description = "Comma-separated ZeRO stages to run on the ranks.", DefaultValueFactory = _ => "0,1,2,3" };
        var allReduceMb = new Option<double>("--allreduce-mb") { Description = "Buffer of the all-reduce measurement, in MiB.", DefaultValueFactory = _ => 100 };
        var output = new Option<string?>("--out") { Description = "Work folder (model, data, runs) to keep; default a temporary folder, deleted after." };
        var command = new Command("distributed", "Data-parallel training on this machine: all-reduce vs memcpy, N ranks vs one process, peak memory per ZeRO stage")
        {
            preset, ranks, steps, length, stages, allReduceMb, output,
        };
        command.SetAction(parse =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var stderr = parse.InvocationConfiguration.Error;
            if (MpiLaunch.IsMpiJob)
            {
                using var communicator = MpiCommunicator.Initialize();
                DistributedBenchmark.Probe(communicator, parse.GetValue(allReduceMb), repeats: 5, stdout);
                return 0;
            }
            var stageTexts = parse.GetValue(stages)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (stageTexts.Length == 0 || stageTexts.Any(t => !int.TryParse(t, out int s) || s is < 0 or > 3))
            {
                stderr.WriteLine($"vchat bench distributed: --stages '{parse.GetValue(stages)}' must be comma-separated ZeRO stages 0 to 3, e.g. 0,1,2,3.");
                return 1;
            }
            if (parse.GetValue(ranks) < 2 || parse.GetValue(steps) < 2 || parse.GetValue(length) < 2 || parse.GetValue(allReduceMb) <= 0)
            {
                stderr.WriteLine("vchat bench distributed: --ranks and --steps must be at least 2, --seq-len at least 2, --allreduce-mb positive.");
                return 1;
            }
            string work = parse.GetValue(output) ?? Path.Combine(Path.GetTempPath(), $"vchat-bench-distributed-{Environment.ProcessId}");
            try
            {
                stdout.WriteLine($"machine: {MachineInfo.Current()}");
                var result = DistributedBenchmark.Run(new DistributedBenchmark.Options(parse.GetValue(preset)!, parse.GetValue(ranks), parse.GetValue(steps),
                    parse.GetValue(length), stageTexts.Select(int.Parse).ToList(), parse.GetValue(allReduceMb), work), stdout);
                Print(result, stdout);
                return 0;
            }
            catch (InvalidOperationException e)
            {
                stderr.WriteLine($"vchat bench distributed: {e.Message}");
                return 1;
            }
            finally
            {
                if (parse.GetValue(output) is null && Directory.Exists(work)) Directory.Delete(work, recursive: true);
            }
        });
        return command;
    }

    static void Print(DistributedBenchmark.Result result, TextWriter output)
    {
        var ci = CultureInfo.InvariantCulture;
        var a = result.AllReduce;
        double mb = a.Bytes / (1024.0 * 1024.0);
        output.WriteLine(string.Format(ci, "all-reduce of {0:F0} MiB over {1} ranks: {2:F3} s ({3:F2} GB/s); memcpy of the same bytes: {4:F3} s ({5:F2} GB/s); all-reduce / memcpy time: {6:F1}×",
            mb, a.Ranks, a.AllReduceSeconds, a.Bytes / a.AllReduceSeconds / 1e9, a.MemcpySeconds, a.Bytes / a.MemcpySeconds / 1e9, a.AllReduceSeconds / a.MemcpySeconds));
        var single = result.Runs[0];
        var zero0 = result.Runs.FirstOrDefault(r => r.Stage == 0);
        output.WriteLine($"{"run",-18} {"tokens/s",9} {"vs 1 proc",10} {"peak RSS/rank MB",20} {"after step 1 MB",18} {"vs ZeRO 0 MB",14} {"frozen kept/rank",18}");
        foreach (var row in result.Runs)
        {
            string Ranks(IReadOnlyList<double> values) => string.Join(" / ", values.Select(v => v.ToString("F0", ci)));
            string delta = zero0 is null || row.Stage is null ? "" :
                string.Join(" / ", row.StepPeakMb.Zip(zero0.StepPeakMb, (x, z) => (x - z).ToString("+0;-0;0", ci)));
            string frozen = row.FrozenElements is { } f ? string.Format(ci, "{0:P1}", f.Kept / (double)f.Total) : "";
            output.WriteLine(string.Format(ci, "{0,-18} {1,9:F1} {2,10:F2} {3,20} {4,18} {5,14} {6,18}",
                row.Name, row.TokensPerSecond, row.TokensPerSecond / single.TokensPerSecond, Ranks(row.PeakMb), Ranks(row.StepPeakMb), delta, frozen));
        }
    }
}
