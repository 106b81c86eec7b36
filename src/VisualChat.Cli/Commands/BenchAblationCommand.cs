using System.CommandLine;
using VisualChat.Benchmarks;
using VisualChat.Benchmarks.Ablation;

namespace VisualChat.Cli.Commands;

/// <summary>
/// <c>vchat bench ablation</c>: causal vs causal+cross vs MMCA under the same budget (pretrained encoder and LM, data,
/// order, steps, optimiser) over several seeds — held-out exact match per question kind and eval loss vs steps.
/// </summary>
public static class BenchAblationCommand
{
    public static Command Create()
    {
        var defaults = new AblationSettings();
        var quick = new Option<bool>("--quick") { Description = "Tiny budget (one seed, a few steps) for smoke tests; the numbers mean nothing." };
        var seeds = new Option<int?>("--seeds") { Description = $"Seeds 1..N; each pretrains its own encoder and LM (default {defaults.Seeds})." };
        var steps = new Option<int?>("--steps") { Description = $"DeepSpeed-VisualChat-stage steps per mode (default {defaults.Steps})." };
        var lmSteps = new Option<int?>("--lm-steps") { Description = $"Text-only LM pretraining steps per seed (default {defaults.LmSteps})." };
        var visionSteps = new Option<int?>("--vision-steps") { Description = $"Vision pretraining steps per seed (default {defaults.VisionSteps})." };
        var workers = new Option<int?>("--workers") { Description = $"Jobs trained at the same time, each on one libtorch thread (default {defaults.Workers})." };
        var output = new Option<string>("--out") { Description = "Folder for ablation.json, ablation.csv and ablation.png; work/ holds each seed's data, model folders and training runs.", DefaultValueFactory = _ => Path.Combine("runs", "ablation") };
        var command = new Command("ablation", "Attention ablation: causal, causal+cross and MMCA trained with the same budget over several seeds (table + JSON + CSV + PNG).")
        {
            quick, seeds, steps, lmSteps, visionSteps, workers, output,
        };
        command.SetAction(parse =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            var settings = parse.GetValue(quick) ? AblationSettings.Quick() : new AblationSettings();
            settings = settings with
            {
                Seeds = parse.GetValue(seeds) ?? settings.Seeds,
                Steps = parse.GetValue(steps) ?? settings.Steps,
                LmSteps = parse.GetValue(lmSteps) ?? settings.LmSteps,
                VisionSteps = parse.GetValue(visionSteps) ?? settings.VisionSteps,
                Workers = parse.GetValue(workers) ?? settings.Workers,
            };
            try
            {
                settings.Validated();
            }
            catch (ArgumentException e)
            {
                parse.InvocationConfiguration.Error.WriteLine($"vchat bench ablation: {e.Message}");
                return 2;
            }
            // Every job runs on one libtorch thread (tiny matrices); set before printing so the machine line says so.
            TorchSharp.torch.set_num_threads(1);
            stdout.WriteLine($"machine: {MachineInfo.Current()}");
            stdout.WriteLine($"budget per seed: vision {settings.VisionSteps} steps, LM {settings.LmSteps} steps, DSVC {settings.Steps} steps × batch {settings.Recipe.ChatBatch} " +
                             $"from {settings.Conversations} conversations, eval on {settings.EvalConversations} held-out conversations");
            var result = AttentionAblation.Run(settings, stdout, Path.Combine(parse.GetValue(output)!, "work"));
            stdout.WriteLine();
            stdout.Write(AblationReport.Table(result));
            foreach (var file in AblationReport.Write(result, parse.GetValue(output)!)) stdout.WriteLine($"wrote {file}");
            stdout.WriteLine($"wall time: {result.WallSeconds:F1} s");
            return 0;
        });
        return command;
    }
}
