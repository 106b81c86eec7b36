using VisualChat.Tests.Vision.Encoders;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Pretrained;

/// <summary>A temporary folder deleted with the test, and helpers to rewrite checkpoints in it.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder() => Path = Directory.CreateTempSubdirectory("vchat-vision-").FullName;

    public string Path { get; }

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

internal static class PretrainedTestSupport
{
    public static string FixturePath(params string[] parts) =>
        Path.Combine(new[] { VisionTestSupport.RepoRoot(), "tests", "VisualChat.Tests", "Vision", "Pretrained", "Fixtures" }.Concat(parts).ToArray());

    /// <summary>Every tensor of a checkpoint in memory (tiny checkpoints only).</summary>
    public static Dictionary<string, Tensor> ReadAll(string path)
    {
        using var source = TensorFiles.Open(path);
        return source.Entries.ToDictionary(e => e.Name, e => source.Read(e.Name));
    }

    /// <summary>Same shape and bit-identical values.</summary>
    public static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public static Tensor Pixels(int batch, int size, double phase = 0.3) =>
        VisionTestSupport.FormulaPixels([batch, 3, size, size], phase);
}
