using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>
/// Reuses pretrained demo stages across runs (<c>vchat demo --cache DIR</c>): a stage's weights are stored under a key
/// that hashes every recipe setting the stage depends on, so changing a later stage (e.g. the DSVC steps) reuses the
/// encoder and the LM, and changing anything they depend on retrains them.
/// </summary>
public sealed class DemoStageCache(string folder)
{
    public string Folder { get; } = folder;

    public static string Key(string stage, params object?[] settings)
    {
        var text = stage + "|" + JsonSerializer.Serialize(settings);
        return stage + "-" + Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16].ToLowerInvariant();
    }

    /// <summary>Loads <paramref name="module"/>'s weights (and the stage's JSON report) from the cache when present,
    /// otherwise runs <paramref name="train"/> and stores its result.</summary>
    public (T Report, bool Cached) GetOrTrain<T>(string key, nn.Module module, Func<T> train, TextWriter log)
    {
        var weights = Path.Combine(Folder, key + ".safetensors");
        var report = Path.Combine(Folder, key + ".json");
        if (File.Exists(weights) && File.Exists(report))
        {
            using (var source = TensorFiles.Open(weights))
                StateDict.Load(module, source);
            log.WriteLine($"  reused {weights}");
            return (JsonSerializer.Deserialize<T>(File.ReadAllText(report))!, true);
        }
        var result = train();
        Directory.CreateDirectory(Folder);
        StateDict.Save(module, weights + ".tmp.safetensors");
        File.Move(weights + ".tmp.safetensors", weights, overwrite: true);
        File.WriteAllText(report, JsonSerializer.Serialize(result));
        return (result, false);
    }
}
