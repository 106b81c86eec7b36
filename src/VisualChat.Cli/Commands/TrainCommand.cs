using System.CommandLine;
using VisualChat.Benchmarks;
using VisualChat.Training;

namespace VisualChat.Cli.Commands;

/// <summary>
/// <c>vchat train --config FILE [--set key=value]... [--resume auto|DIR]</c>: validates the config before loading
/// anything, builds the run through <see cref="TrainingRunFactory"/>, trains with a live status line on a terminal
/// (plain log lines every log_every_steps otherwise). Ctrl-C writes a resumable <c>latest/</c> checkpoint and exits 130.
/// </summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var configOption = new Option<string>("--config") { Description = "Training config (.json, .yaml or .yml); keys in docs/training.md.", Required = true };
        var setOption = new Option<string[]>("--set") { Description = "Override a key: --set learning_rate=2e-4 --set model.path=/models/llama (repeatable).", AllowMultipleArgumentsPerToken = false };
        var resumeOption = new Option<string?>("--resume") { Description = "auto (latest complete checkpoint in output_dir) or a checkpoint folder." };
        var command = new Command("train", "Train a model from a training config (model.kind llama-lm: LLaMA LM on a JSONL of texts).")
        {
            configOption, setOption, resumeOption,
        };
        command.SetAction(parse =>
        {
            var output = parse.InvocationConfiguration.Output;
            var error = parse.InvocationConfiguration.Error;
            var overrides = (parse.GetValue(setOption) ?? []).ToList();
            if (parse.GetValue(resumeOption) is { } resume) overrides.Add($"resume=\"{resume}\"");
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

            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                if (cancel.IsCancellationRequested) return; // a second Ctrl-C ends the process
                e.Cancel = true;
                cancel.Cancel();
                error.WriteLine("\nvchat train: stopping after the current step and writing a resumable checkpoint (Ctrl-C again to abort)…");
            };
            Console.CancelKeyPress += onCancel;
            try
            {
                using var run = TrainingRunFactory.Create(config, message => output.WriteLine(message));
                var display = new ProgressDisplay(output, !Console.IsOutputRedirected, config.LogEverySteps);
                run.Trainer.Progress = display.Show;
                run.Trainer.Log = display.Message;
                output.WriteLine($"run dir {run.Trainer.RunDir}: {run.Trainer.TrainableNames.Count} trainable tensors, {run.Trainer.TotalSteps} steps, precision {run.Trainer.StorageDtype}");
                var summary = run.Run(cancel.Token);
                display.Finish();
                output.WriteLine(summary.ToString());
                return summary.Interrupted ? 130 : 0;
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
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                error.WriteLine($"vchat train: {e.Message}");
                return 1;
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        });
        return command;
    }

    /// <summary>A status line rewritten in place on a terminal; plain lines every N steps when redirected.</summary>
    sealed class ProgressDisplay(TextWriter output, bool live, int everySteps)
    {
        int _lastLength;

        public void Show(StepMetrics metrics)
        {
            if (metrics.Kind == "eval") { Message(metrics.ToLogLine()); return; }
            if (live)
            {
                var line = metrics.ToLogLine();
                output.Write("\r" + line.PadRight(_lastLength));
                _lastLength = line.Length;
            }
            else if (metrics.Step % everySteps == 0 || metrics.Step == metrics.TotalSteps) output.WriteLine(metrics.ToLogLine());
        }

        public void Message(string text)
        {
            if (live && _lastLength > 0) { output.WriteLine(); _lastLength = 0; }
            output.WriteLine(text);
        }

        public void Finish()
        {
            if (live && _lastLength > 0) output.WriteLine();
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
