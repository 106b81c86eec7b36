using System.Text.Json;
using TorchSharp;

namespace VisualChat.Weights;

/// <summary>
/// A checkpoint split over several files and described by an index such as <c>model.safetensors.index.json</c>:
/// <c>{"metadata": {"total_size": N}, "weight_map": {tensor name: shard file name}}</c>.
/// </summary>
internal sealed class ShardedSource : ITensorSource
{
    private readonly string _indexPath;
    private readonly Dictionary<string, ITensorSource> _shardOf;
    private readonly List<ITensorSource> _shards;

    public IReadOnlyList<TensorEntry> Entries { get; }

    private ShardedSource(string indexPath, Dictionary<string, ITensorSource> shardOf, List<ITensorSource> shards, List<TensorEntry> entries)
    {
        _indexPath = indexPath;
        _shardOf = shardOf;
        _shards = shards;
        Entries = entries;
    }

    public static ShardedSource Open(string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        string folder = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        var shardsByFile = new Dictionary<string, ITensorSource>(StringComparer.Ordinal);
        var shardOf = new Dictionary<string, ITensorSource>(StringComparer.Ordinal);
        var entries = new List<TensorEntry>();
        try
        {
            foreach (var (name, file) in weightMap)
            {
                if (!shardsByFile.TryGetValue(file, out var shard))
                {
                    string shardPath = Path.Combine(folder, file);
                    if (!File.Exists(shardPath))
                    {
                        throw new FileNotFoundException(
                            $"Shard '{shardPath}' listed in '{indexPath}' (for tensor '{name}') does not exist; download the missing shard.", shardPath);
                    }
                    shard = TensorFiles.OpenFile(shardPath);
                    shardsByFile.Add(file, shard);
                }
                if (!shard.Contains(name))
                {
                    throw new InvalidDataException($"'{indexPath}' maps tensor '{name}' to '{file}', which does not contain it.");
                }
                shardOf.Add(name, shard);
                entries.Add(shard.Describe(name));
            }
        }
        catch
        {
            foreach (var shard in shardsByFile.Values)
            {
                shard.Dispose();
            }
            throw;
        }
        return new ShardedSource(indexPath, shardOf, shardsByFile.Values.ToList(), entries);
    }

    private static List<(string Name, string File)> ReadWeightMap(string indexPath)
    {
        try
        {
            using var stream = File.OpenRead(indexPath);
            using var index = JsonDocument.Parse(stream);
            if (index.RootElement.ValueKind != JsonValueKind.Object
                || !index.RootElement.TryGetProperty("weight_map", out var weightMap)
                || weightMap.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"Sharded checkpoint index '{indexPath}' has no \"weight_map\" object.");
            }
            var result = new List<(string, string)>();
            foreach (var pair in weightMap.EnumerateObject())
            {
                string? file = pair.Value.ValueKind == JsonValueKind.String ? pair.Value.GetString() : null;
                if (string.IsNullOrEmpty(file) || Path.IsPathRooted(file) || file.Contains(".."))
                {
                    throw new InvalidDataException($"Sharded checkpoint index '{indexPath}' maps tensor '{pair.Name}' to an invalid file {pair.Value.GetRawText()}.");
                }
                result.Add((pair.Name, file));
            }
            return result;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Sharded checkpoint index '{indexPath}' is not valid JSON: {e.Message}", e);
        }
    }

    public bool Contains(string name) => _shardOf.ContainsKey(name);

    public TensorEntry Describe(string name) =>
        _shardOf.TryGetValue(name, out var shard)
            ? shard.Describe(name)
            : throw new KeyNotFoundException($"Tensor '{name}' is not in the sharded checkpoint '{_indexPath}'.");

    public torch.Tensor Read(string name, torch.ScalarType? dtype = null, torch.Device? device = null) =>
        _shardOf.TryGetValue(name, out var shard)
            ? shard.Read(name, dtype, device)
            : throw new KeyNotFoundException($"Tensor '{name}' is not in the sharded checkpoint '{_indexPath}'.");

    public torch.Tensor? TryMap(string name) => _shardOf.TryGetValue(name, out var shard) ? shard.TryMap(name) : null;

    public void Dispose()
    {
        foreach (var shard in _shards)
        {
            shard.Dispose();
        }
    }
}
