using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;

namespace VisualChat.Weights;

/// <summary>A tensor to write, with the element type it is stored as (converted one tensor at a time while writing).</summary>
internal readonly record struct TensorToWrite(string Name, torch.Tensor Tensor, torch.ScalarType DType)
{
    public long ByteLength => DTypes.NumberOfElements(Tensor.shape) * DTypes.ElementSize(DType);
}

/// <summary>
/// Writes safetensors files exactly as the Hugging Face implementation lays them out: tensors ordered by dtype
/// (widest first) then name, compact JSON header with <c>__metadata__</c> first, padded with spaces to 8 bytes.
/// </summary>
internal static class SafetensorsWriter
{
    private static readonly JsonWriterOptions CompactJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static void Write(string path, IReadOnlyList<TensorToWrite> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var ordered = Order(tensors, path);
        var header = BuildHeader(ordered, metadata);
        try
        {
            using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var tensor in ordered)
            {
                WriteData(stream, tensor);
            }
        }
        catch
        {
            File.Delete(path);
            throw;
        }
    }

    private static List<TensorToWrite> Order(IReadOnlyList<TensorToWrite> tensors, string path)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tensor in tensors)
        {
            if (tensor.Name == "__metadata__" || !names.Add(tensor.Name))
            {
                throw new ArgumentException($"Cannot write '{path}': tensor name '{tensor.Name}' is reserved or repeated.", nameof(tensors));
            }
        }
        return tensors
            .OrderByDescending(t => DTypes.SafetensorsRank(t.DType))
            .ThenBy(t => t.Name, StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>The header bytes (JSON plus padding) for tensors laid out in the given order.</summary>
    internal static byte[] BuildHeader(IReadOnlyList<TensorToWrite> ordered, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, CompactJson))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var pair in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    json.WriteString(pair.Key, pair.Value);
                }
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var tensor in ordered)
            {
                long end = offset + tensor.ByteLength;
                json.WriteStartObject(tensor.Name);
                json.WriteString("dtype", DTypes.ToSafetensorsName(tensor.DType));
                json.WriteStartArray("shape");
                foreach (var size in tensor.Tensor.shape)
                {
                    json.WriteNumberValue(size);
                }
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
        int padding = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < padding; i++)
        {
            buffer.WriteByte((byte)' ');
        }
        return buffer.ToArray();
    }

    private static void WriteData(Stream stream, TensorToWrite tensor)
    {
        var source = tensor.Tensor;
        bool direct = source.device_type == DeviceType.CPU && source.dtype == tensor.DType && source.is_contiguous();
        if (direct)
        {
            TensorBytes.ForEachChunk(source, chunk => stream.Write(chunk));
            return;
        }
        using var scope = torch.NewDisposeScope();
        var converted = source.to(tensor.DType, torch.CPU).contiguous();
        TensorBytes.ForEachChunk(converted, chunk => stream.Write(chunk));
    }
}
