using VisualChat.Training;

namespace VisualChat.Tests.Training;

public class CurvePlotTests
{
    static readonly byte[] PngSignature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    [Fact]
    public void WritesALabelledPngOfTrainEvalAndLearningRate()
    {
        var folder = Path.Combine(Path.GetTempPath(), "vchat-curve-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            var history = Enumerable.Range(1, 40).Select(s => new StepMetrics { Step = s, Loss = 3.0 / s, LearningRate = 1e-3 * Math.Min(1, s / 10.0) })
                .Concat([new StepMetrics { Kind = "eval", Step = 20, EvalLoss = 0.4 }, new StepMetrics { Kind = "eval", Step = 40, EvalLoss = 0.2 }])
                .Append(new StepMetrics { Step = 41, Loss = double.NaN })
                .ToList();
            var path = Path.Combine(folder, "loss.png");
            CurvePlot.Write(path, history, 640, 400);
            var bytes = File.ReadAllBytes(path);
            Assert.Equal(PngSignature, bytes[..8]);
            Assert.True(bytes.Length > 5000, $"{bytes.Length} bytes: a labelled chart is not that small");
            Assert.False(File.Exists(path + ".tmp.png"));

            // An empty history still gives a valid image instead of an exception in the middle of training.
            CurvePlot.Write(path, [], 320, 200);
            Assert.Equal(PngSignature, File.ReadAllBytes(path)[..8]);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
