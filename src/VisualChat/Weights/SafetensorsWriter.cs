using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;

namespace VisualChat.Weights;

/// <summary>A tensor to write: its name, shape and stored element type, and how to get its values when its bytes are
/// due — an existing tensor, or one produced on demand so a whole checkpoint never has to exist in memory.</summary>
internal readonly record struct TensorToWrite(string Name, long[] Shape, torch.ScalarType DType, Func<torch.Tensor> Produce)
{
    public TensorToWrite(string name, torch.Tensor tensor, torch.ScalarType dtype) : this(name, tensor.shape, dtype, () => tensor) { }

    public long ByteLength => DTypes.NumberOfElements(Shape) * DTypes.ElementSize(DType);
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
                foreach (var size in tensor.Shape)
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
        // Produced tensors and conversions belong to this scope; an existing tensor handed in is left alone.
        using var scope = torch.NewDisposeScope();
        var source = tensor.Produce();
        if (!source.shape.SequenceEqual(tensor.Shape))
        {
            throw new InvalidOperationException(
                $"Tensor '{tensor.Name}' was produced with shape {DTypes.FormatShape(source.shape)}, expected {DTypes.FormatShape(tensor.Shape)}.");
        }

        bool direct = source.device_type == DeviceType.CPU && source.dtype == tensor.DType && source.is_contiguous();
        var stored = direct ? source : source.to(tensor.DType, torch.CPU).contiguous();
        TensorBytes.ForEachChunk(stored, chunk => stream.Write(chunk));
    }
}
