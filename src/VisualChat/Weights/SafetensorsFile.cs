using System.Buffers.Binary;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using TorchSharp;

namespace VisualChat.Weights;

/// <summary>
/// A <c>.safetensors</c> file: 8-byte little-endian header length, a JSON header mapping tensor names to
/// <c>{dtype, shape, data_offsets}</c> (plus optional string <c>__metadata__</c>), then the raw data. Only the header is
/// read when opening; tensors are read one at a time straight into their storage.
/// </summary>
public sealed class SafetensorsFile : ITensorSource
{
    /// <summary>Same bound as the reference implementation: a larger header is taken as a corrupt length.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, (TensorEntry Entry, long Begin, long End)> _tensors;
    private readonly long _dataStart;

    public string Path { get; }
    public IReadOnlyList<TensorEntry> Entries { get; }

    /// <summary>The string pairs of <c>__metadata__</c> (empty when the header has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(string path, SafeFileHandle handle, long dataStart,
        Dictionary<string, (TensorEntry, long, long)> tensors, List<TensorEntry> entries, Dictionary<string, string> metadata)
    {
        Path = path;
        _handle = handle;
        _dataStart = dataStart;
        _tensors = tensors;
        Entries = entries;
        Metadata = metadata;
    }

    /// <summary>Opens <paramref name="path"/> and validates its header against the file size.</summary>
    public static SafetensorsFile Open(string path)
    {
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        try
        {
            return Parse(path, handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static SafetensorsFile Parse(string path, SafeFileHandle handle)
    {
        long fileLength = RandomAccess.GetLength(handle);
        if (fileLength < 8)
        {
            throw Corrupt(path, $"it is {fileLength} bytes long, too short for the 8-byte header length");
        }
        Span<byte> lengthBytes = stackalloc byte[8];
        ReadExactly(handle, lengthBytes, 0, path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength < 2 || headerLength > MaxHeaderBytes || (long)headerLength > fileLength - 8)
        {
            throw Corrupt(path, $"the header length {headerLength} does not fit the file ({fileLength} bytes; at most {MaxHeaderBytes})");
        }
        var headerBytes = new byte[headerLength];
        ReadExactly(handle, headerBytes, 8, path);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        JsonDocument header;
        try
        {
            header = JsonDocument.Parse(headerBytes);
        }
        catch (JsonException e)
        {
            throw Corrupt(path, $"the header is not valid JSON ({e.Message})");
        }
        using (header)
        {
            if (header.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw Corrupt(path, "the header is not a JSON object");
            }
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var tensors = new Dictionary<string, (TensorEntry, long, long)>(StringComparer.Ordinal);
            var entries = new List<TensorEntry>();
            foreach (var property in header.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    ReadMetadata(path, property.Value, metadata);
                    continue;
                }
                var (entry, begin, end) = ReadTensorInfo(path, property.Name, property.Value, dataLength);
                if (!tensors.TryAdd(entry.Name, (entry, begin, end)))
                {
                    throw Corrupt(path, $"tensor '{entry.Name}' is listed twice");
                }
                entries.Add(entry);
            }
            CheckNoOverlap(path, tensors);
            return new SafetensorsFile(path, handle, dataStart, tensors, entries, metadata);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw Corrupt(path, "__metadata__ is not an object of strings");
        }
        foreach (var pair in value.EnumerateObject())
        {
            if (pair.Value.ValueKind != JsonValueKind.String)
            {
                throw Corrupt(path, $"__metadata__ value '{pair.Name}' is not a string");
            }
            metadata[pair.Name] = pair.Value.GetString()!;
        }
    }

    private static (TensorEntry, long, long) ReadTensorInfo(string path, string name, JsonElement info, long dataLength)
    {
        if (info.ValueKind != JsonValueKind.Object
            || !info.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String
            || !info.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array
            || !info.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
        {
            throw Corrupt(path, $"tensor '{name}' lacks a string dtype, an array shape or a two-number data_offsets");
        }
        string dtypeName = dtypeElement.GetString()!;
        var dtype = DTypes.FromSafetensorsName(dtypeName)
            ?? throw Corrupt(path, $"tensor '{name}' has unsupported dtype '{dtypeName}' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
        var shape = new long[shapeElement.GetArrayLength()];
        int axis = 0;
        foreach (var size in shapeElement.EnumerateArray())
        {
            if (size.ValueKind != JsonValueKind.Number || !size.TryGetInt64(out shape[axis]) || shape[axis] < 0)
            {
                throw Corrupt(path, $"tensor '{name}' has an invalid shape {size.GetRawText()}");
            }
            axis++;
        }
        var offsets = offsetsElement.EnumerateArray().ToArray();
        if (!offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
        {
            throw Corrupt(path, $"tensor '{name}' has invalid data_offsets {offsetsElement.GetRawText()}");
        }
        if (end > dataLength)
        {
            throw Corrupt(path, $"tensor '{name}' data_offsets [{begin}, {end}] reach past the end of the data ({dataLength} bytes); the file is truncated or corrupt");
        }
        long expectedBytes;
        try
        {
            expectedBytes = checked(DTypes.NumberOfElements(shape) * DTypes.ElementSize(dtype));
        }
        catch (Exception e) when (e is OverflowException or InvalidDataException)
        {
            throw Corrupt(path, $"tensor '{name}' has an impossible shape {DTypes.FormatShape(shape)}");
        }
        if (expectedBytes != end - begin)
        {
            throw Corrupt(path, $"tensor '{name}' of shape {DTypes.FormatShape(shape)} and dtype {dtypeName} needs {expectedBytes} bytes but data_offsets [{begin}, {end}] hold {end - begin}");
        }
        return (new TensorEntry(name, dtype, shape, path), begin, end);
    }

    private static void CheckNoOverlap(string path, Dictionary<string, (TensorEntry Entry, long Begin, long End)> tensors)
    {
        var ordered = tensors.Values.Where(t => t.End > t.Begin).OrderBy(t => t.Begin).ToList();
        for (int i = 1; i < ordered.Count; i++)
        {
            if (ordered[i].Begin < ordered[i - 1].End)
            {
                throw Corrupt(path, $"the data of tensors '{ordered[i - 1].Entry.Name}' and '{ordered[i].Entry.Name}' overlap");
            }
        }
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public TensorEntry Describe(string name) =>
        _tensors.TryGetValue(name, out var tensor)
            ? tensor.Entry
            : throw new KeyNotFoundException($"Tensor '{name}' is not in '{Path}'.");

    public torch.Tensor Read(string name, torch.ScalarType? dtype = null, torch.Device? device = null)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        var (entry, begin, _) = _tensors.TryGetValue(name, out var tensor)
            ? tensor
            : throw new KeyNotFoundException($"Tensor '{name}' is not in '{Path}'.");
        return TensorBytes.ReadContiguous(_handle, _dataStart + begin, entry.DType, entry.Shape, Path, name, dtype, device);
    }

    // One flat mapping of the whole file per element type; tensor views share them (libtorch keeps a mapping alive as
    // long as any view of it lives, after this file is disposed too).
    private readonly Dictionary<torch.ScalarType, torch.Tensor> _mapped = [];

    public torch.Tensor? TryMap(string name)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        var (entry, begin, _) = _tensors.TryGetValue(name, out var tensor)
            ? tensor
            : throw new KeyNotFoundException($"Tensor '{name}' is not in '{Path}'.");
        long elementSize = DTypes.ElementSize(entry.DType);
        long offset = _dataStart + begin;
        if (offset % elementSize != 0) return null;
        if (!_mapped.TryGetValue(entry.DType, out var flat)) {
            long elements = RandomAccess.GetLength(_handle) / elementSize;
            flat = torch.from_file(Path, shared: false, size: elements, dtype: entry.DType);
            _mapped[entry.DType] = flat;
        }
        long count = DTypes.NumberOfElements(entry.Shape);
        using var slice = flat.narrow(0, offset / elementSize, count);
        return slice.view(entry.Shape);
    }

    public void Dispose()
    {
        foreach (var flat in _mapped.Values) flat.Dispose();
        _mapped.Clear();
        _handle.Dispose();
    }

    private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset, string path)
    {
        while (!buffer.IsEmpty)
        {
            int read = RandomAccess.Read(handle, buffer, offset);
            if (read <= 0)
            {
                throw Corrupt(path, "it ends inside its header");
            }
            offset += read;
            buffer = buffer[read..];
        }
    }

    private static InvalidDataException Corrupt(string path, string problem) =>
        new($"'{path}' is not a valid safetensors file: {problem}.");
}
