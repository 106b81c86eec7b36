using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using VisualChat.Data.Synthetic;

namespace VisualChat.Benchmarks.Ablation;

/// <summary>The ablation's table (stdout), <c>ablation.json</c>, <c>ablation.csv</c> and <c>ablation.png</c>.</summary>
public static class AblationReport
{
    public const string JsonFile = "ablation.json", CsvFile = "ablation.csv", PlotFile = "ablation.png";

    static readonly ShapesQuestion[] Kinds = Enum.GetValues<ShapesQuestion>();

    /// <summary>Mean ± sample std over seeds of held-out exact match (%) overall and per question kind, and eval loss
    /// before and after training.</summary>
    public static string Table(AblationResult result)
    {
        var text = new StringBuilder();
        int seeds = result.Settings.Seeds;
        text.AppendLine($"held-out exact match (%), mean ± std over {seeds} seed(s); eval loss = answer-token cross entropy on held-out conversations");
        var header = new StringBuilder($"{"mode",-13} {"overall",12}");
        foreach (var kind in Kinds) header.Append($" {kind,12}");
        header.Append($" {"eval loss@0",12} {"eval loss end",15}");
        text.AppendLine(header.ToString());
        foreach (var summary in result.Summaries)
        {
            var row = new StringBuilder($"{summary.ModeName,-13} {Percent(summary.Accuracy),12}");
            foreach (var kind in Kinds) row.Append($" {Percent(summary.AccuracyPerKind[kind]),12}");
            row.Append($" {Loss(summary.EvalLoss[0]),12} {Loss(summary.FinalEvalLoss),15}");
            text.AppendLine(row.ToString());
        }
        var rounds = result.Runs[0].RoundsPerKind;
        text.AppendLine("held-out rounds per kind (seed 1): " + string.Join(", ", Kinds.Select(k => $"{k} {rounds.GetValueOrDefault(k)}")));
        text.AppendLine("eval loss vs DSVC steps (mean over seeds):");
        var steps = result.Summaries[0].Steps;
        text.AppendLine($"{"step",-13}" + string.Concat(steps.Select(s => $" {s,7}")));
        foreach (var summary in result.Summaries)
            text.AppendLine($"{summary.ModeName,-13}" + string.Concat(summary.EvalLoss.Select(l => $" {l.Mean,7:F4}")));
        return text.ToString();

        static string Percent(MeanStd v) => double.IsNaN(v.Mean) ? "-" : $"{v.Mean * 100:F1}±{v.Std * 100:F1}";
        static string Loss(MeanStd v) => $"{v.Mean:F4}±{v.Std:F4}";
    }

    /// <summary>Writes the JSON, CSV and PNG into <paramref name="folder"/>; returns their paths.</summary>
    public static IReadOnlyList<string> Write(AblationResult result, string folder)
    {
        Directory.CreateDirectory(folder);
        var json = Path.Combine(folder, JsonFile);
        File.WriteAllText(json, ToJson(result).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        var csv = Path.Combine(folder, CsvFile);
        File.WriteAllText(csv, ToCsv(result));
        var png = Path.Combine(folder, PlotFile);
        WritePlot(result, png);
        return [json, csv, png];
    }

    /// <summary>One row per mode × seed × question kind.</summary>
    public static string ToCsv(AblationResult result)
    {
        var text = new StringBuilder("mode,seed,kind,accuracy,rounds,overall_accuracy,eval_loss_step0,final_eval_loss,final_train_loss,steps\n");
        foreach (var run in result.Runs.OrderBy(r => result.Settings.Modes.ToList().IndexOf(r.Mode)).ThenBy(r => r.Seed))
        {
            foreach (var kind in Kinds)
            {
                string accuracy = run.AccuracyPerKind.TryGetValue(kind, out var a) ? Number(a) : "";
                text.AppendLine(string.Join(',', run.ModeName, run.Seed.ToString(CultureInfo.InvariantCulture), kind.ToString(), accuracy,
                    run.RoundsPerKind.GetValueOrDefault(kind).ToString(CultureInfo.InvariantCulture), Number(run.Accuracy),
                    Number(run.EvalLoss[0].Loss), Number(run.FinalEvalLoss), Number(run.FinalTrainLoss),
                    run.EvalLoss[^1].Step.ToString(CultureInfo.InvariantCulture)));
            }
        }

        return text.ToString();
    }

    static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    static JsonNode? Value(double value) => double.IsFinite(value) ? JsonValue.Create(value) : null;

    static JsonObject Stats(MeanStd v) => new() { ["mean"] = Value(v.Mean), ["std"] = Value(v.Std), ["min"] = Value(v.Min), ["max"] = Value(v.Max) };

    public static JsonObject ToJson(AblationResult result)
    {
        var settings = result.Settings;
        return new JsonObject
        {
            ["machine"] = result.Machine,
            ["wall_seconds"] = result.WallSeconds,
            ["settings"] = new JsonObject
            {
                ["seeds"] = settings.Seeds, ["steps"] = settings.Steps, ["lm_steps"] = settings.LmSteps, ["vision_steps"] = settings.VisionSteps,
                ["eval_points"] = settings.EvalPoints, ["conversations"] = settings.Conversations, ["eval_conversations"] = settings.EvalConversations,
                ["workers"] = settings.Workers, ["modes"] = new JsonArray(settings.Modes.Select(m => (JsonNode)VisualChat.Model.VisualChatConfig.AttentionModeToName(m)).ToArray()),
                ["recipe"] = JsonSerializer.SerializeToNode(settings.Recipe),
            },
            ["pretraining"] = new JsonArray(result.Pretraining.Select(p => (JsonNode)new JsonObject
            {
                ["seed"] = p.Seed, ["vision_kind_accuracy"] = p.Vision.KindAccuracy, ["vision_colour_accuracy"] = p.Vision.ColourAccuracy,
                ["vision_count_accuracy"] = p.Vision.CountAccuracy, ["lm_final_loss"] = Value(p.LmFinalLoss),
                ["vision_seconds"] = p.VisionSeconds, ["lm_seconds"] = p.LmSeconds,
            }).ToArray()),
            ["summary"] = new JsonArray(result.Summaries.Select(s => (JsonNode)new JsonObject
            {
                ["mode"] = s.ModeName,
                ["accuracy"] = Stats(s.Accuracy),
                ["accuracy_per_kind"] = new JsonObject(s.AccuracyPerKind.Select(kv => KeyValuePair.Create(kv.Key.ToString(), (JsonNode?)Stats(kv.Value)))),
                ["final_eval_loss"] = Stats(s.FinalEvalLoss),
                ["eval_loss"] = new JsonArray(s.Steps.Select((step, i) => (JsonNode)new JsonObject { ["step"] = step, ["loss"] = Stats(s.EvalLoss[i]) }).ToArray()),
            }).ToArray()),
            ["runs"] = new JsonArray(result.Runs.Select(r => (JsonNode)new JsonObject
            {
                ["mode"] = r.ModeName, ["seed"] = r.Seed, ["accuracy"] = Value(r.Accuracy),
                ["accuracy_per_kind"] = new JsonObject(r.AccuracyPerKind.Select(kv => KeyValuePair.Create(kv.Key.ToString(), Value(kv.Value)))),
                ["rounds_per_kind"] = new JsonObject(r.RoundsPerKind.Select(kv => KeyValuePair.Create(kv.Key.ToString(), (JsonNode?)kv.Value))),
                ["eval_loss"] = new JsonArray(r.EvalLoss.Select(p => (JsonNode)new JsonObject { ["step"] = p.Step, ["loss"] = Value(p.Loss) }).ToArray()),
                ["final_train_loss"] = Value(r.FinalTrainLoss), ["trainable_parameters"] = r.TrainableParameters, ["seconds"] = r.Seconds,
            }).ToArray()),
        };
    }

    /// <summary>Eval loss vs steps, one line per mode (mean over seeds) with the min–max band over seeds.</summary>
    public static void WritePlot(AblationResult result, string path)
    {
        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int index = 0;
        foreach (var summary in result.Summaries)
        {
            var color = palette.GetColor(index++);
            double[] steps = summary.Steps.Select(s => (double)s).ToArray();
            if (result.Settings.Seeds > 1)
            {
                var band = plot.Add.FillY(steps, summary.EvalLoss.Select(l => l.Max).ToArray(), summary.EvalLoss.Select(l => l.Min).ToArray());
                band.FillColor = color.WithAlpha(0.15);
                band.LineWidth = 0;
            }
            var line = plot.Add.Scatter(steps, summary.EvalLoss.Select(l => l.Mean).ToArray());
            line.Color = color;
            line.LineWidth = 2;
            line.MarkerSize = 5;
            line.LegendText = $"{summary.ModeName} (exact match {summary.Accuracy.Mean:P1})";
        }
        plot.Title($"Attention ablation: held-out eval loss ({result.Settings.Seeds} seed(s), mean{(result.Settings.Seeds > 1 ? ", band = min-max" : "")})");
        plot.XLabel("DeepSpeed-VisualChat training step");
        plot.YLabel("answer-token cross entropy (held-out)");
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.SavePng(path, 900, 560);
    }
}
