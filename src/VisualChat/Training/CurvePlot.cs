using VisualChat.Data.Synthetic;

namespace VisualChat.Training;

/// <summary>
/// loss.png: training loss (blue) with eval loss (orange squares) in the top panel, learning rate (red) in the bottom
/// panel, each scaled to its own min–max; x is the optimizer step. Drawn with the project's PNG encoder, so no plotting
/// package (and no native text renderer) is needed; the exact values are in metrics.jsonl.
/// </summary>
public static class CurvePlot
{
    public static void Write(string path, IReadOnlyList<StepMetrics> history, int width = 800, int height = 480)
    {
        var rgb = new byte[width * height * 3];
        Array.Fill(rgb, (byte)255);
        var train = history.Where(m => m.Kind == "train" && m.Loss is { } l && double.IsFinite(l)).ToList();
        var eval = history.Where(m => m.Kind == "eval" && m.EvalLoss is { } l && double.IsFinite(l)).ToList();
        long maxStep = Math.Max(1, history.Count == 0 ? 1 : history.Max(m => m.Step));
        int margin = 20, panelHeight = (height - 3 * margin) / 2;
        var lossPanel = (Top: margin, Bottom: margin + panelHeight);
        var lrPanel = (Top: 2 * margin + panelHeight, Bottom: 2 * margin + 2 * panelHeight);
        foreach (var panel in new[] { lossPanel, lrPanel })
        {
            Line(rgb, width, height, margin, panel.Bottom, width - margin, panel.Bottom, (160, 160, 160));
            Line(rgb, width, height, margin, panel.Top, margin, panel.Bottom, (160, 160, 160));
        }
        int X(long step) => margin + (int)Math.Round((width - 2 * margin - 1) * (double)step / maxStep);
        var losses = train.Select(m => m.Loss!.Value).Concat(eval.Select(m => m.EvalLoss!.Value)).ToList();
        if (losses.Count > 0)
        {
            double lo = losses.Min(), hi = losses.Max();
            int Y(double v) => lossPanel.Bottom - (int)Math.Round((panelHeight - 1) * (hi > lo ? (v - lo) / (hi - lo) : 0.5));
            Polyline(rgb, width, height, train.Select(m => (X(m.Step), Y(m.Loss!.Value))).ToList(), (31, 119, 180));
            foreach (var m in eval) Square(rgb, width, height, X(m.Step), Y(m.EvalLoss!.Value), (255, 127, 14));
        }
        var lrs = train.Where(m => m.LearningRate is not null).ToList();
        if (lrs.Count > 0)
        {
            double lo = lrs.Min(m => m.LearningRate!.Value), hi = lrs.Max(m => m.LearningRate!.Value);
            int Y(double v) => lrPanel.Bottom - (int)Math.Round((panelHeight - 1) * (hi > lo ? (v - lo) / (hi - lo) : 0.5));
            Polyline(rgb, width, height, lrs.Select(m => (X(m.Step), Y(m.LearningRate!.Value))).ToList(), (214, 39, 40));
        }
        File.WriteAllBytes(path, PngEncoder.EncodeRgb(rgb, width, height));
    }

    static void Polyline(byte[] rgb, int w, int h, List<(int X, int Y)> points, (byte R, byte G, byte B) color)
    {
        if (points.Count == 1) Square(rgb, w, h, points[0].X, points[0].Y, color);
        for (int i = 1; i < points.Count; i++) Line(rgb, w, h, points[i - 1].X, points[i - 1].Y, points[i].X, points[i].Y, color);
    }

    static void Square(byte[] rgb, int w, int h, int x, int y, (byte R, byte G, byte B) color)
    {
        for (int dy = -2; dy <= 2; dy++)
            for (int dx = -2; dx <= 2; dx++) Set(rgb, w, h, x + dx, y + dy, color);
    }

    static void Line(byte[] rgb, int w, int h, int x0, int y0, int x1, int y1, (byte R, byte G, byte B) color)
    {
        int dx = Math.Abs(x1 - x0), dy = -Math.Abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, error = dx + dy;
        while (true)
        {
            Set(rgb, w, h, x0, y0, color);
            if (x0 == x1 && y0 == y1) break;
            int e2 = 2 * error;
            if (e2 >= dy) { error += dy; x0 += sx; }
            if (e2 <= dx) { error += dx; y0 += sy; }
        }
    }

    static void Set(byte[] rgb, int w, int h, int x, int y, (byte R, byte G, byte B) color)
    {
        if (x < 0 || y < 0 || x >= w || y >= h) return;
        int i = (y * w + x) * 3;
        (rgb[i], rgb[i + 1], rgb[i + 2]) = color;
    }
}
