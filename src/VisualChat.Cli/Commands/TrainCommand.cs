using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using Spectre.Console;
using Spectre.Console.Rendering;
using VisualChat.Benchmarks;
using VisualChat.Training;
using VisualChat.Training.Distributed;

namespace VisualChat.Cli.Commands;

/// <summary>
/// <c>vchat train --config FILE [--set key=value]... [--resume auto|DIR]</c>: validates the config before loading
/// anything, builds the run through <see cref="TrainingRunFactory"/>, trains with a live Spectre.Console table on a terminal
/// (plain log lines every log_every_steps otherwise). Ctrl-C, SIGTERM (kill, timeout, docker stop, Slurm, Kubernetes)
/// and SIGHUP finish the current step, write a resumable <c>latest/</c> checkpoint and exit 130, 143 and 129; a second
/// signal aborts at once (checkpoints are written atomically, so the last complete one survives).
/// Exit codes: 0 done, 1 data or file error, 2 config error, 3 diverged.
/// Under <c>mpirun -np N</c> (detected from Open MPI's environment) every rank trains its shard of each global batch;
/// rank 0 prints and writes the run folder, rank K logs to <c>output_dir/rank-K.log</c>, and a rank that fails aborts
/// the whole job with its exit code (MPI_Abort), so no rank waits forever for it.
/// </summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var configOption = new Option<string>("--config") { Description = "Training config (.json, .yaml or .yml); keys in docs/training.md.", Required = true };
        var setOption = new Option<string[]>("--set") { Description = "Override a key: --set learning_rate=2e-4 --set model.path=/models/llama (repeatable).", AllowMultipleArgumentsPerToken = false };
        var resumeOption = new Option<string?>("--resume") { Description = "auto (latest complete checkpoint in output_dir) or a checkpoint folder." };
        var resumeForceOption = new Option<bool>("--resume-force") { Description = "Resume even if batch sizes, seed, data or LR schedule differ from the checkpoint's." };
        var overwriteOption = new Option<bool>("--overwrite") { Description = "Start a new run in an output_dir that holds one (deletes its checkpoints and metrics)." };
        var command = new Command("train", "Train a model from a training config (model.kind llama-lm: LLaMA LM on a JSONL of texts).")
        {
            configOption, setOption, resumeOption, resumeForceOption, overwriteOption,
        };
        command.SetAction(parse =>
        {
            var output = parse.InvocationConfiguration.Output;
            var error = parse.InvocationConfiguration.Error;
            var overrides = (parse.GetValue(setOption) ?? []).ToList();
            if (parse.GetValue(resumeOption) is { } resume) overrides.Add($"resume=\"{resume}\"");
            if (parse.GetValue(resumeForceOption)) overrides.Add("resume_force=true");
            if (parse.GetValue(overwriteOption)) overrides.Add("overwrite=true");
            TrainingConfig config;
            try
            {
                config = TrainingConfig.Load(parse.GetValue(configOption)!, overrides);
                TrainingRunFactory.CheckInputs(config);
            }
            catch (TrainingConfigException e)
            {
                error.WriteLine($"vchat train: {e.Message}");
                return 2;
            }
            var memory = new TrainingMemory();
            if (!MpiLaunch.IsMpiJob)
            {
                int exit = Train(config, output, error, parse.GetValue(CliErrors.VerboseOption), null, memory);
                if (exit == 0 && memory.Report() is { } single) output.WriteLine(single);
                return exit;
            }

            MpiCommunicator communicator;
            try { communicator = MpiCommunicator.Initialize(); }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or InvalidOperationException)
            {
                error.WriteLine($"vchat train: {e.Message}");
                return 1;
            }
            StreamWriter? rankLog = null;
            if (!communicator.IsRoot)
            {
                Directory.CreateDirectory(config.OutputDir);
                rankLog = new StreamWriter(Path.Combine(config.OutputDir, $"rank-{communicator.Rank}.log"), append: true) { AutoFlush = true };
                rankLog.WriteLine($"--- rank {communicator.Rank} of {communicator.Size}, pid {Environment.ProcessId}, {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC ---");
                (output, error) = (rankLog, new TeeWriter(rankLog, error));
            }
            int code = Train(config, output, error, parse.GetValue(CliErrors.VerboseOption), communicator, memory);
            if (code == 0 && memory.Report() is { } peaks) output.WriteLine($"rank {communicator.Rank} of {communicator.Size}: {peaks}");
            rankLog?.Flush();
            if (code is not (0 or 129 or 130 or 143))
            {
                error.WriteLine($"vchat train: rank {communicator.Rank} of {communicator.Size} failed (exit {code}); aborting all ranks.");
                communicator.Abort(code);
            }
            communicator.Dispose();
            rankLog?.Dispose();
            return code;
        });
        return command;
    }

    static int Train(TrainingConfig config, TextWriter output, TextWriter error, bool verbose, MpiCommunicator? communicator, TrainingMemory memory)
    {
        using var cancel = new CancellationTokenSource();
        int interruptedExit = 130;
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            if (cancel.IsCancellationRequested) return; // a second Ctrl-C ends the process
            e.Cancel = true;
            cancel.Cancel();
            error.WriteLine("\nvchat train: stopping after the current step and writing a resumable checkpoint (Ctrl-C again to abort)…");
        };
        Console.CancelKeyPress += onCancel;
        // SIGTERM and SIGHUP are how clusters, `timeout` and `docker stop` end a job: treat them like the first Ctrl-C.
        // A second signal is not cancelled, so the runtime's default (terminate) applies.
        PosixSignalRegistration Register(PosixSignal signal, int exitCode, string name) => PosixSignalRegistration.Create(signal, context =>
        {
            if (cancel.IsCancellationRequested) return;
            context.Cancel = true;
            interruptedExit = exitCode;
            cancel.Cancel();
            error.WriteLine($"\nvchat train: {name} received: stopping after the current step and writing a resumable checkpoint (send it again to abort)…");
        });
        using var onTerm = Register(PosixSignal.SIGTERM, 143, "SIGTERM");
        using var onHangup = OperatingSystem.IsWindows() ? null : Register(PosixSignal.SIGHUP, 129, "SIGHUP");
        try
        {
            using var run = TrainingRunFactory.Create(config, message => output.WriteLine(message), communicator);
            if (config.Device == "cpu")
            {
                VisualChat.Model.DevicePolicy.ConfigureCpuThreads(run.ModelParameters);
                communicator?.ShareCores();
            }
            output.WriteLine($"run dir {run.Trainer.RunDir}: {run.Trainer.TrainableNames.Count} trainable tensors, {run.Trainer.TotalSteps} steps, precision {run.Trainer.StorageDtype}" +
                (communicator is null ? "" : $"; rank {communicator.Rank} of {communicator.Size}, ZeRO stage {config.Distributed.ZeroStage}, global batch {config.PerDeviceTrainBatchSize} × {config.GradientAccumulationSteps} × {communicator.Size}"));
            TrainingSummary summary;
            if (!Console.IsOutputRedirected && ReferenceEquals(output, Console.Out) && AnsiConsole.Profile.Capabilities.Interactive)
            {
                summary = LiveDisplay.Run(run, cancel.Token, memory.Observe);
            }
            else
            {
                var display = new PlainDisplay(output, config.LogEverySteps);
                run.Trainer.Progress = metrics => { memory.Observe(metrics); display.Show(metrics); };
                run.Trainer.Log = output.WriteLine;
                summary = run.Run(cancel.Token);
            }
            output.WriteLine(summary.ToString());
            return summary.Interrupted ? interruptedExit : 0;
        }
        catch (TrainingConfigException e)
        {
            error.WriteLine($"vchat train: {e.Message}");
            return 2;
        }
        catch (TrainingDivergedException e)
        {
            error.WriteLine($"vchat train: {e.Message}");
            return 3;
        }
        catch (VisualChat.Data.DataQualityException e)
        {
            error.WriteLine($"vchat train: {e.Message.ReplaceLineEndings(" ")}");
            return 1;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            error.WriteLine($"vchat train: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return CliErrors.Report("train", e, verbose, error);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>
    /// Peak resident memory of the run, and of its steady state: loading a model (and ZeRO-3's partitioning of it)
    /// peaks once, while every training step repeats its own peak, so the kernel's high-water mark is read, the
    /// allocator's free pages returned, and the mark reset after the first step. What a machine needs to hold the run
    /// is the first figure; what each step needs (and what ZeRO's partitioning saves) the second.
    /// </summary>
    sealed class TrainingMemory
    {
        long _beforeReset = -1;

        bool _failed;

        public void Observe(StepMetrics metrics)
        {
            if (_failed || _beforeReset >= 0 || metrics.Kind != "train" || !PeakMemory.Supported) return;
            try
            {
                long peak = PeakMemory.HighWaterMark();
                // Loading leaves freed buffers in the C allocator, which would count as resident until the end.
                PeakMemory.ReturnFreeMemory();
                PeakMemory.Reset();
                _beforeReset = peak;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or DllNotFoundException or EntryPointNotFoundException or FormatException)
            {
                // A report about the run must never stop it (e.g. /proc/self/clear_refs not writable in a container).
                _failed = true;
            }
        }

        public string? Report()
        {
            if (_failed || !PeakMemory.Supported) return null;
            long since;
            try { since = PeakMemory.HighWaterMark(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { return null; }
            static string Mb(long bytes) => (bytes / (1024.0 * 1024.0)).ToString("F0", CultureInfo.InvariantCulture);
            return _beforeReset < 0
                ? $"peak RSS {Mb(since)} MB"
                : $"peak RSS {Mb(Math.Max(since, _beforeReset))} MB, {Mb(since)} MB after the first step";
        }
    }

    /// <summary>A rank's errors go to its log and to the job's stderr (mpirun shows them).</summary>
    sealed class TeeWriter(TextWriter first, TextWriter second) : TextWriter
    {
        public override System.Text.Encoding Encoding => first.Encoding;
        public override void Write(char value) { first.Write(value); second.Write(value); }
        public override void Write(string? value) { first.Write(value); second.Write(value); }
        public override void WriteLine(string? value) { first.WriteLine(value); second.WriteLine(value); }
        public override void Flush() { first.Flush(); second.Flush(); }
    }

    /// <summary>Plain log lines every N steps (and every evaluation) for redirected output.</summary>
    sealed class PlainDisplay(TextWriter output, int everySteps)
    {
        public void Show(StepMetrics metrics)
        {
            if (metrics.Kind == "eval" || metrics.Step % everySteps == 0 || metrics.Step == metrics.TotalSteps) output.WriteLine(metrics.ToLogLine());
        }
    }

    /// <summary>Spectre.Console live table (step, epoch, loss, lr, throughput, ETA, skips) plus the latest messages.</summary>
    static class LiveDisplay
    {
        public static TrainingSummary Run(TrainingRun run, CancellationToken cancellationToken, Action<StepMetrics> observe)
        {
            var messages = new Queue<string>();
            StepMetrics? last = null;
            double? evalLoss = null;
            IRenderable Render()
            {
                var table = new Table().Border(TableBorder.Rounded).HideHeaders().AddColumn("key").AddColumn("value");
                void Row(string key, string value) => table.AddRow(Markup.Escape(key), Markup.Escape(value));
                var ci = CultureInfo.InvariantCulture;
                Row("step", last is null ? "starting" : $"{last.Step}/{last.TotalSteps}");
                Row("epoch", last is null ? "-" : last.Epoch.ToString("F2", ci));
                Row("loss", last?.Loss?.ToString("F4", ci) ?? "-");
                Row("eval loss", evalLoss?.ToString("F4", ci) ?? "-");
                Row("lr", last?.LearningRate?.ToString("E2", ci) ?? "-");
                Row("grad norm", last?.GradNorm?.ToString("F3", ci) ?? "-");
                Row("tokens/s", last?.TokensPerSecond?.ToString("F0", ci) ?? "-");
                Row("images/s", last?.ImagesPerSecond?.ToString("F1", ci) ?? "-");
                Row("loss scale", last?.LossScale?.ToString("G", ci) ?? "-");
                Row("skipped steps / batches / samples", last is null ? "0 / 0 / 0" : $"{last.Skipped} / {last.SkippedBatches} / {last.SkippedSamples}");
                Row("ETA", last?.EtaSeconds is { } eta && double.IsFinite(eta) ? TimeSpan.FromSeconds(Math.Round(eta)).ToString() : "-");
                var recent = new Rows(messages.Select(m => (IRenderable)new Spectre.Console.Text(m)).DefaultIfEmpty(new Spectre.Console.Text("")).ToArray());
                return new Rows(table, recent);
            }
            TrainingSummary? summary = null;
            AnsiConsole.Live(Render()).AutoClear(false).Start(context =>
            {
                void Message(string text)
                {
                    messages.Enqueue(text);
                    while (messages.Count > 6) messages.Dequeue();
                    context.UpdateTarget(Render());
                }
                run.Trainer.Log = Message;
                run.Trainer.Progress = metrics =>
                {
                    observe(metrics);
                    if (metrics.Kind == "eval") { evalLoss = metrics.EvalLoss; Message(metrics.ToLogLine()); return; }
                    last = metrics;
                    context.UpdateTarget(Render());
                };
                summary = run.Run(cancellationToken);
            });
            return summary!;
        }
    }

    /// <summary><c>vchat bench train</c>: tokens/s and MFU (6N and frozen-aware) of LLaMA-LM training vs measured GEMM peak.</summary>
    public static Command CreateBench()
    {
        var preset = new Option<string>("--preset") { Description = "tiny (≈4M matmul params) or 100m (≈110M).", DefaultValueFactory = _ => "tiny" };
        var batch = new Option<int>("--batch") { Description = "Sequences per step.", DefaultValueFactory = _ => 2 };
        var length = new Option<int>("--seq-len") { Description = "Tokens per sequence.", DefaultValueFactory = _ => 128 };
        var steps = new Option<int>("--steps") { Description = "Timed optimizer steps.", DefaultValueFactory = _ => 5 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed steps first.", DefaultValueFactory = _ => 1 };
        var modes = new Option<string[]>("--modes") { Description = "all and/or frozen (only token embeddings trainable).", DefaultValueFactory = _ => ["all", "frozen"], AllowMultipleArgumentsPerToken = true };
        var command = new Command("train", "Training tokens/s and MFU of a LLaMA LM, all-trainable vs frozen, against measured fp32 GEMM FLOP/s.")
        {
            preset, batch, length, steps, warmup, modes,
        };
        command.SetAction(parse =>
        {
            var output = parse.InvocationConfiguration.Output;
            var config = TrainBenchmark.Preset(parse.GetValue(preset)!);
            output.WriteLine($"machine: {MachineInfo.Current()}");
            var (peak, rows) = TrainBenchmark.Run(config, parse.GetValue(batch), parse.GetValue(length), parse.GetValue(steps), parse.GetValue(warmup), parse.GetValue(modes)!);
            output.WriteLine($"fp32 GEMM 1024³: {peak / 1e9:F1} GFLOP/s (MFU baseline, measured now)");
            output.WriteLine($"{"mode",-7} {"N",12} {"N_train",12} {"B×L",9} {"s/step",8} {"tok/s",9} {"MFU 6N",8} {"MFU frozen-aware",17}");
            foreach (var r in rows)
                output.WriteLine($"{r.Mode,-7} {r.MatmulParameters,12:N0} {r.TrainableMatmulParameters,12:N0} {r.Batch + "×" + r.SequenceLength,9} {r.StepSeconds,8:F3} {r.TokensPerSecond,9:F0} {r.Mfu6N,8:P1} {r.MfuFrozenAware,17:P1}");
            return 0;
        });
        return command;
    }
}
