using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Encoders;

/// <summary>Closed-form weights and the Python reference fixture shared by the vision tests.</summary>
internal static class VisionTestSupport
{
    private static readonly Lazy<JsonElement> LazyReference = new(() =>
    {
        var path = Path.Combine(RepoRoot(), "tests", "VisualChat.Tests", "Vision", "Encoders", "Reference", "vision_reference.json");
        return JsonDocument.Parse(File.ReadAllText(path)).RootElement.Clone();
    });

    public static JsonElement Reference => LazyReference.Value;

    public static string RepoRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "VisualChat.sln")))
            directory = directory.Parent;
        return directory?.FullName ?? throw new InvalidOperationException("VisualChat.sln not found above the test binaries.");
    }

    public static string SharedPath(params string[] parts) => Path.Combine(new[] { RepoRoot(), "..", "shared" }.Concat(parts).ToArray());

    /// <summary>
    /// Same formula as make_vision_reference.py: keys in ordinal order, k = position, i = flat index,
    /// s = sin(0.731 i + 1.37 k); LayerNorm weights 1 + 0.1 s, all else 0.1 s.
    /// </summary>
    public static void ApplyFormulaWeights(nn.Module module, params string[] skip)
    {
        var stateDict = module.state_dict();
        var keys = stateDict.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
        using var noGrad = no_grad();
        for (var k = 0; k < keys.Count; k++)
        {
            if (skip.Contains(keys[k])) continue;
            var target = stateDict[keys[k]];
            var values = new float[target.NumberOfElements];
            var normWeight = IsNormWeight(keys[k]);
            for (var i = 0; i < values.Length; i++)
            {
                var s = Math.Sin(0.731 * i + 1.37 * k);
                values[i] = (float)(normWeight ? 1 + 0.1 * s : 0.1 * s);
            }
            using var source = tensor(values).reshape(target.shape);
            target.copy_(source);
        }
    }

    private static bool IsNormWeight(string key)
    {
        if (!key.EndsWith(".weight", StringComparison.Ordinal)) return false;
        var modulePath = key[..key.LastIndexOf('.')];
        var module = modulePath[(modulePath.LastIndexOf('.') + 1)..];
        return module.StartsWith("ln_", StringComparison.Ordinal) || module.Contains("layer_norm") || module.Contains("layrnorm")
               || module.Contains("layernorm");
    }

    public static Tensor FormulaPixels(long[] shape, double phase)
    {
        var count = shape.Aggregate(1L, (a, b) => a * b);
        var values = new float[count];
        for (var i = 0; i < count; i++) values[i] = (float)Math.Sin(0.05 * i + phase);
        return tensor(values).reshape(shape);
    }

    /// <summary>Checks a tensor against a {shape, sum, abs_sum, picks} summary from the fixture.</summary>
    public static void AssertMatchesSummary(JsonElement summary, Tensor actual, double tolerance = 2e-4)
    {
        var shape = summary.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        Assert.Equal(shape, actual.shape);
        var flat = actual.detach().to(ScalarType.Float64).reshape(-1).data<double>().ToArray();
        foreach (var pick in summary.GetProperty("picks").EnumerateArray())
        {
            var index = pick[0].GetInt32();
            var expected = pick[1].GetDouble();
            Assert.True(Math.Abs(flat[index] - expected) <= tolerance,
                $"element {index}: expected {expected}, got {flat[index]}");
        }
        var absSum = summary.GetProperty("abs_sum").GetDouble();
        Assert.True(Math.Abs(flat.Sum() - summary.GetProperty("sum").GetDouble()) <= 1e-3,
            $"sum: expected {summary.GetProperty("sum").GetDouble()}, got {flat.Sum()}");
        Assert.True(Math.Abs(flat.Sum(Math.Abs) - absSum) <= 1e-3,
            $"abs sum: expected {absSum}, got {flat.Sum(Math.Abs)}");
    }

    public static float[] Floats(JsonElement array) => array.EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();

    public static string[] Strings(JsonElement array) => array.EnumerateArray().Select(e => e.GetString()!).ToArray();
}
