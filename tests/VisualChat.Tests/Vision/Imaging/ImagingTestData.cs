using System.Text.Json;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;

namespace VisualChat.Tests.Vision.Imaging;

/// <summary>Paths to the shared eval images and the committed PIL-derived fixtures (produced by tools/*.py).</summary>
internal static class ImagingTestData
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string SharedEvalDir => Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared", "data", "dsvc-eval"));

    public static string FixtureDir => Path.Combine(RepoRoot, "tests", "VisualChat.Tests", "Vision", "Imaging");

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "VisualChat.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException($"VisualChat.sln not found above {AppContext.BaseDirectory}.");
    }

    public static string EvalImage(string relative) => Path.Combine(SharedEvalDir, relative);

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<RgbImage>> Decoded = new();

    /// <summary>The eval image decoded once per test run with default options (decoding the large JPEGs dominates test time).</summary>
    public static RgbImage LoadEvalImage(string relative) =>
        Decoded.GetOrAdd(relative, r => new Lazy<RgbImage>(() => ImageLoader.Load(EvalImage(r)))).Value;

    /// <summary>Every non-JSON file under the shared eval folder, relative to it, '/'-separated.</summary>
    public static IEnumerable<string> AllEvalImages() =>
        Directory.EnumerateFiles(SharedEvalDir, "*", SearchOption.AllDirectories)
            .Where(f => !f.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            .Select(f => Path.GetRelativePath(SharedEvalDir, f).Replace('\\', '/'))
            .OrderBy(f => f, StringComparer.Ordinal);

    public static Dictionary<string, PilImageReference> PilReference { get; } =
        JsonSerializer.Deserialize<Dictionary<string, PilImageReference>>(File.ReadAllText(Path.Combine(FixtureDir, "pil_reference.json")))!;

    public static Dictionary<string, FormatFixture> FormatFixtures { get; } =
        JsonSerializer.Deserialize<Dictionary<string, FormatFixture>>(File.ReadAllText(Path.Combine(FixtureDir, "format_fixtures.json")))!;
}

internal sealed record PilImageReference(
    [property: System.Text.Json.Serialization.JsonPropertyName("format")] string Format,
    [property: System.Text.Json.Serialization.JsonPropertyName("mode")] string Mode,
    [property: System.Text.Json.Serialization.JsonPropertyName("orientation")] int Orientation,
    [property: System.Text.Json.Serialization.JsonPropertyName("width")] int Width,
    [property: System.Text.Json.Serialization.JsonPropertyName("height")] int Height,
    [property: System.Text.Json.Serialization.JsonPropertyName("progressive")] bool Progressive,
    [property: System.Text.Json.Serialization.JsonPropertyName("clip224")] PilPreprocessReference Clip224,
    [property: System.Text.Json.Serialization.JsonPropertyName("clip448")] PilPreprocessReference Clip448);

internal sealed record PilPreprocessReference(
    [property: System.Text.Json.Serialization.JsonPropertyName("resized_width")] int ResizedWidth,
    [property: System.Text.Json.Serialization.JsonPropertyName("resized_height")] int ResizedHeight,
    [property: System.Text.Json.Serialization.JsonPropertyName("crop_level_sum")] long CropLevelSum,
    [property: System.Text.Json.Serialization.JsonPropertyName("crop_sha256")] string CropSha256,
    [property: System.Text.Json.Serialization.JsonPropertyName("channel_mean")] double[] ChannelMean,
    [property: System.Text.Json.Serialization.JsonPropertyName("pixels")] Dictionary<string, int[]> Pixels);

internal sealed record FormatFixture(
    [property: System.Text.Json.Serialization.JsonPropertyName("base64")] string Base64,
    [property: System.Text.Json.Serialization.JsonPropertyName("width")] int Width,
    [property: System.Text.Json.Serialization.JsonPropertyName("height")] int Height,
    [property: System.Text.Json.Serialization.JsonPropertyName("rgb_hex")] string RgbHex,
    [property: System.Text.Json.Serialization.JsonPropertyName("note")] string Note,
    [property: System.Text.Json.Serialization.JsonPropertyName("rgb_drop_alpha_hex")] string? RgbDropAlphaHex);
