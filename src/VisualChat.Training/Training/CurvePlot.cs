namespace VisualChat.Training;

/// <summary>
/// loss.png: training loss (line) and eval loss (markers) against the optimizer step on the left axis, the learning rate
/// on the right axis; titled and labelled. The exact values are in metrics.jsonl.
/// </summary>
public static class CurvePlot
{
    public static void Write(string path, IReadOnlyList<StepMetrics> history, int width = 900, int height = 520)
    {
        var train = history.Where(m => m.Kind == "train" && m.Loss is { } l && double.IsFinite(l)).ToList();
        var eval = history.Where(m => m.Kind == "eval" && m.EvalLoss is { } l && double.IsFinite(l)).ToList();
        var rates = history.Where(m => m.Kind == "train" && m.LearningRate is { } r && double.IsFinite(r)).ToList();
        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        if (train.Count > 0)
        {
            var line = plot.Add.Scatter(train.Select(m => (double)m.Step).ToArray(), train.Select(m => m.Loss!.Value).ToArray());
            line.Color = palette.GetColor(0);
            line.MarkerSize = train.Count == 1 ? 5 : 0;
            line.LegendText = "train loss";
        }
        if (eval.Count > 0)
        {
            var points = plot.Add.Scatter(eval.Select(m => (double)m.Step).ToArray(), eval.Select(m => m.EvalLoss!.Value).ToArray());
            points.Color = palette.GetColor(1);
            points.LineWidth = eval.Count > 1 ? 1 : 0;
            points.MarkerSize = 7;
            points.LegendText = "eval loss";
        }
        if (rates.Count > 0)
        {
            var rate = plot.Add.Scatter(rates.Select(m => (double)m.Step).ToArray(), rates.Select(m => m.LearningRate!.Value).ToArray());
            rate.Color = palette.GetColor(3);
            rate.LinePattern = ScottPlot.LinePattern.Dashed;
            rate.MarkerSize = 0;
            rate.LegendText = "learning rate (right axis)";
            rate.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = "learning rate";
        }
        plot.Title(train.Count == 0 && eval.Count == 0 ? "No finite loss recorded yet" : "Training curves");
        plot.XLabel("optimizer step");
        plot.YLabel("loss (cross entropy on the trained tokens)");
        if (train.Count + eval.Count + rates.Count > 0) plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        // Written beside the target and moved over it, so a crash while plotting never leaves a truncated loss.png.
        var temp = path + ".tmp.png";
        plot.SavePng(temp, width, height);
        File.Move(temp, path, overwrite: true);
    }
}
