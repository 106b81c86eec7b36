using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Model.Presets;

/// <summary>
/// Writes a safetensors checkpoint (one file, or shards with a HF index) from a list of names and shapes, producing
/// each tensor only when its bytes are due: at most one tensor exists in memory at a time, so a 7B-parameter
/// checkpoint needs about one embedding matrix of RAM. Layout follows the Hugging Face writer: tensors of a file sorted
/// by name (one dtype), compact header with <c>__metadata__</c> first, padded with spaces to 8 bytes.
/// </summary>
public static class StreamingCheckpointWriter
{
    static readonly JsonWriterOptions CompactJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Writes the tensors and returns the file names written (shards first, then the index when sharded).</summary>
    /// <param name="produce">Makes the tensor for (name, shape); the result may have any floating dtype and is converted to <paramref name="dtype"/>.</param>
    public static IReadOnlyList<string> Write(string folder, IReadOnlyList<(string Name, long[] Shape)> tensors, ScalarType dtype,
        Func<string, long[], Tensor> produce, long maxShardBytes = LlamaForCausalLM.DefaultMaxShardBytes, string baseName = "model")
    {
        if (maxShardBytes <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), maxShardBytes, "The shard size limit must be positive.");
        int elementSize = LlamaConfig.BytesPerElement(DevicePolicy.DTypeName(dtype));
        Directory.CreateDirectory(folder);
        var shards = new List<List<(string Name, long[] Shape)>> { new() };
        long shardBytes = 0, totalBytes = 0;
        foreach (var tensor in tensors) {
            long bytes = tensor.Shape.Aggregate(1L, (a, b) => a * b) * elementSize;
            if (shards[^1].Count > 0 && shardBytes + bytes > maxShardBytes) {
                shards.Add(new());
                shardBytes = 0;
            }
            shards[^1].Add(tensor);
            shardBytes += bytes;
            totalBytes += bytes;
        }
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        if (shards.Count == 1) {
            string single = baseName + ".safetensors";
            WriteFile(Path.Combine(folder, single), shards[0], dtype, elementSize, produce, metadata);
            return [single];
        }
        var files = new List<string>();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++) {
            string file = $"{baseName}-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            WriteFile(Path.Combine(folder, file), shards[i], dtype, elementSize, produce, metadata);
            foreach (var tensor in shards[i]) weightMap[tensor.Name] = file;
            files.Add(file);
        }
        string index = baseName + ".safetensors.index.json";
        var indexJson = new Dictionary<string, object> {
            ["metadata"] = new Dictionary<string, long> { ["total_size"] = totalBytes },
            ["weight_map"] = weightMap,
        };
        File.WriteAllText(Path.Combine(folder, index), JsonSerializer.Serialize(indexJson, new JsonSerializerOptions { WriteIndented = true }) + "\n");
        files.Add(index);
        return files;
    }

    /// <summary>The header bytes (length prefix excluded) for tensors in file order.</summary>
    public static byte[] BuildHeader(IReadOnlyList<(string Name, long[] Shape)> ordered, ScalarType dtype, IReadOnlyDictionary<string, string>? metadata)
    {
        int elementSize = LlamaConfig.BytesPerElement(DevicePolicy.DTypeName(dtype));
        string dtypeName = dtype switch {
            ScalarType.Float32 => "F32", ScalarType.BFloat16 => "BF16", ScalarType.Float16 => "F16", ScalarType.Float64 => "F64",
            _ => throw new ArgumentException($"Cannot write weights as {dtype}; use float32, bfloat16 or float16.", nameof(dtype)),
        };
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, CompactJson)) {
            json.WriteStartObject();
            if (metadata is { Count: > 0 }) {
                json.WriteStartObject("__metadata__");
                foreach (var pair in metadata.OrderBy(p => p.Key, StringComparer.Ordinal)) json.WriteString(pair.Key, pair.Value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, shape) in ordered) {
                long end = offset + shape.Aggregate(1L, (a, b) => a * b) * elementSize;
                json.WriteStartObject(name);
                json.WriteString("dtype", dtypeName);
                json.WriteStartArray("shape");
                foreach (var size in shape) json.WriteNumberValue(size);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(end);
                json.WriteEndArray();
                json.WriteEndObject();
                offset = end;
            }
            json.WriteEndObject();
        }
        while (buffer.Length % 8 != 0) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    static void WriteFile(string path, List<(string Name, long[] Shape)> tensors, ScalarType dtype, int elementSize,
        Func<string, long[], Tensor> produce, IReadOnlyDictionary<string, string> metadata)
    {
        var ordered = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var header = BuildHeader(ordered, dtype, metadata);
        try {
            using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var (name, shape) in ordered) {
                using var scope = NewDisposeScope();
                var produced = produce(name, shape);
                if (!produced.shape.SequenceEqual(shape))
                    throw new InvalidOperationException($"The producer made '{name}' with shape [{string.Join(", ", produced.shape)}], expected [{string.Join(", ", shape)}].");
                var stored = produced.to(dtype, CPU).contiguous();
                TensorBytes.ForEachChunk(stored, chunk => stream.Write(chunk));
            }
        } catch {
            File.Delete(path);
            throw;
        }
    }
}
