using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Vision;

/// <summary>
/// Writes a safetensors file whose tensors are produced one at a time, from a list of names and shapes: the header
/// is computed up front, then each tensor is generated, converted to the stored type, written and freed. Layout is
/// the Hugging Face one (one dtype, so tensors ordered by name; <c>{"format":"pt"}</c> metadata; header padded to 8).
/// </summary>
internal static class StreamingSafetensorsWriter
{
    public static long DataBytes(IEnumerable<VisionTensorSpec> specs, ScalarType dtype) =>
        specs.Sum(s => s.Elements * DTypes.ElementSize(dtype));

    public static void Write(string path, IReadOnlyList<VisionTensorSpec> specs, ScalarType dtype, Func<VisionTensorSpec, Tensor> produce)
    {
        var ordered = specs.OrderBy(s => s.Name, StringComparer.Ordinal).ToList();
        var header = Header(ordered, dtype);
        try
        {
            using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var spec in ordered)
            {
                using var scope = NewDisposeScope();
                var produced = produce(spec);
                if (!produced.shape.SequenceEqual(spec.Shape))
                    throw new InvalidOperationException(
                        $"Tensor '{spec.Name}' was produced with shape {DTypes.FormatShape(produced.shape)}, expected {DTypes.FormatShape(spec.Shape)}.");
                var stored = produced.to(dtype, CPU).contiguous();
                TensorBytes.ForEachChunk(stored, chunk => stream.Write(chunk));
            }
        }
        catch
        {
            File.Delete(path);
            throw;
        }
    }

    private static byte[] Header(IReadOnlyList<VisionTensorSpec> ordered, ScalarType dtype)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            json.WriteString("format", "pt");
            json.WriteEndObject();
            long offset = 0;
            var dtypeName = DTypes.ToSafetensorsName(dtype);
            foreach (var spec in ordered)
            {
                long end = offset + spec.Elements * DTypes.ElementSize(dtype);
                json.WriteStartObject(spec.Name);
                json.WriteString("dtype", dtypeName);
                json.WriteStartArray("shape");
                foreach (var size in spec.Shape) json.WriteNumberValue(size);
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
        var padding = (int)((8 - buffer.Length % 8) % 8);
        for (var i = 0; i < padding; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }
}
