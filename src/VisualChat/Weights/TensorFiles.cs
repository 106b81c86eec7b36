using System.Text.Json;
using TorchSharp;

namespace VisualChat.Weights;

/// <summary>
/// Opens and writes Hugging Face checkpoints: single or sharded <c>.safetensors</c> (with
/// <c>model.safetensors.index.json</c>) and PyTorch <c>.bin</c> files (read through a safe unpickler that never runs
/// code from the file). Reading is streaming — only headers are parsed at open and each tensor is read on demand
/// straight into its own storage — and writing goes tensor by tensor, so neither ever holds a second copy of a model.
/// </summary>
public static class TensorFiles
{
    private static readonly string[] FolderCandidates =
        ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"];

    /// <summary>
    /// Opens a <c>.safetensors</c> file, a <c>.bin</c> file, an <c>*.index.json</c> of a sharded checkpoint, or a folder
    /// holding <c>model.safetensors</c>, <c>model.safetensors.index.json</c>, <c>pytorch_model.bin</c> or
    /// <c>pytorch_model.bin.index.json</c> (or a single <c>*.safetensors</c>).
    /// </summary>
    public static ITensorSource Open(string path)
    {
        if (Directory.Exists(path))
        {
            return OpenFile(FindCheckpoint(path));
        }
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Checkpoint '{path}' does not exist (expected a .safetensors or .bin file, an .index.json, or a model folder).", path);
        }
        return OpenFile(path);
    }

    /// <summary>Opens one file by its kind: index, safetensors, or otherwise a torch.save archive.</summary>
    internal static ITensorSource OpenFile(string path)
    {
        if (path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase))
        {
            return ShardedSource.Open(path);
        }
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            return SafetensorsFile.Open(path);
        }
        return TorchBinFile.Open(path);
    }

    private static string FindCheckpoint(string folder)
    {
        foreach (var candidate in FolderCandidates)
        {
            string path = Path.Combine(folder, candidate);
            if (File.Exists(path))
            {
                return path;
            }
        }
        var safetensors = Directory.GetFiles(folder, "*.safetensors");
        if (safetensors.Length == 1)
        {
            return safetensors[0];
        }
        var indexes = Directory.GetFiles(folder, "*.safetensors.index.json");
        if (indexes.Length == 1)
        {
            return indexes[0];
        }
        throw new FileNotFoundException(safetensors.Length > 1
            ? $"Folder '{folder}' holds {safetensors.Length} .safetensors files and no index; pass the file to load."
            : $"Folder '{folder}' holds no checkpoint ({string.Join(", ", FolderCandidates)} or a single *.safetensors).");
    }

    /// <summary>Writes the tensors to one safetensors file, laid out as the Hugging Face implementation does.</summary>
    public static void SaveSafetensors(string path, IEnumerable<KeyValuePair<string, torch.Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        SafetensorsWriter.Write(path, tensors.Select(t => new TensorToWrite(t.Key, t.Value, t.Value.dtype)).ToList(), metadata);

    /// <summary>
    /// Writes <c>{baseName}.safetensors</c> into <paramref name="folder"/>, or, when the data is larger than
    /// <paramref name="maxShardBytes"/>, shards <c>{baseName}-00001-of-0000N.safetensors</c> plus
    /// <c>{baseName}.safetensors.index.json</c>. Tensors are never split; a tensor larger than the limit gets its own shard.
    /// </summary>
    public static void SaveSharded(string folder, IEnumerable<KeyValuePair<string, torch.Tensor>> tensors, long maxShardBytes,
        string baseName = "model", IReadOnlyDictionary<string, string>? metadata = null) =>
        _ = SaveSharded(folder, tensors.Select(t => new TensorToWrite(t.Key, t.Value, t.Value.dtype)).ToList(), maxShardBytes, baseName, metadata);

    /// <summary>
    /// Like <see cref="SaveSharded(string, IEnumerable{KeyValuePair{string, torch.Tensor}}, long, string, IReadOnlyDictionary{string, string}?)"/>
    /// for tensors that do not exist yet: each is made by <paramref name="produce"/> only when its bytes are due and
    /// converted to <paramref name="dtype"/>, so writing a 7B-parameter checkpoint needs memory for one tensor.
    /// Returns the files written (shards, then the index when sharded).
    /// </summary>
    public static IReadOnlyList<string> SaveShardedStreaming(string folder, IReadOnlyList<(string Name, long[] Shape)> tensors, torch.ScalarType dtype,
        Func<string, long[], torch.Tensor> produce, long maxShardBytes, string baseName = "model", IReadOnlyDictionary<string, string>? metadata = null) =>
        SaveSharded(folder, tensors.Select(t => new TensorToWrite(t.Name, t.Shape, dtype, () => produce(t.Name, t.Shape))).ToList(), maxShardBytes, baseName, metadata);

    internal static IReadOnlyList<string> SaveSharded(string folder, IReadOnlyList<TensorToWrite> tensors, long maxShardBytes, string baseName,
        IReadOnlyDictionary<string, string>? metadata)
    {
        if (maxShardBytes <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(maxShardBytes), maxShardBytes, "The shard size limit must be positive.");
        }
        Directory.CreateDirectory(folder);
        var shards = new List<List<TensorToWrite>> { new() };
        long shardBytes = 0;
        long totalBytes = 0;
        foreach (var tensor in tensors)
        {
            long bytes = tensor.ByteLength;
            if (shards[^1].Count > 0 && shardBytes + bytes > maxShardBytes)
            {
                shards.Add(new());
                shardBytes = 0;
            }
            shards[^1].Add(tensor);
            shardBytes += bytes;
            totalBytes += bytes;
        }
        if (shards.Count == 1)
        {
            SafetensorsWriter.Write(Path.Combine(folder, baseName + ".safetensors"), shards[0], metadata);
            return [baseName + ".safetensors"];
        }
        var files = new List<string>();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string file = $"{baseName}-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            SafetensorsWriter.Write(Path.Combine(folder, file), shards[i], metadata);
            foreach (var tensor in shards[i])
            {
                weightMap[tensor.Name] = file;
            }
            files.Add(file);
        }
        WriteIndex(Path.Combine(folder, baseName + ".safetensors.index.json"), totalBytes, weightMap);
        files.Add(baseName + ".safetensors.index.json");
        return files;
    }

    private static void WriteIndex(string path, long totalBytes, SortedDictionary<string, string> weightMap)
    {
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write);
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions
        {
            Indented = true,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", totalBytes);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (name, file) in weightMap)
            {
                json.WriteString(name, file);
            }
            json.WriteEndObject();
            json.WriteEndObject();
        }
        stream.WriteByte((byte)'\n');
    }
}
