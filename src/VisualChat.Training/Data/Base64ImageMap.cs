using System.Buffers.Text;
using System.Collections.Concurrent;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using VisualChat.Conversations;

namespace VisualChat.Data;

/// <summary>
/// A MIMIC-IT image map — one JSON object <c>{image_id: base64 JPEG}</c>, often many gigabytes — indexed once by a
/// streaming scan (key → byte range of the base64 string in the file) and read on demand, one image at a time.
/// </summary>
public sealed class Base64ImageMap : IDisposable
{
    private static readonly ConcurrentDictionary<string, Lazy<Base64ImageMap>> Cache = new();

    private readonly record struct Entry(long Offset, int Length, bool Escaped);

    private readonly Dictionary<string, Entry> _index;
    private readonly SafeFileHandle _handle;

    public string FilePath { get; }
    public int Count => _index.Count;
    public IEnumerable<string> Keys => _index.Keys;

    private Base64ImageMap(string path, Dictionary<string, Entry> index)
    {
        FilePath = path;
        _index = index;
        _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
    }

    /// <summary>The shared, lazily indexed map for <paramref name="path"/> (indexed once per process).</summary>
    public static Base64ImageMap Open(string path) =>
        Cache.GetOrAdd(Path.GetFullPath(path), p => new Lazy<Base64ImageMap>(() => Index(p))).Value;

    public bool Contains(string key) => _index.ContainsKey(key);

    /// <summary>The decoded image bytes of <paramref name="key"/>. Positional reads: safe from many threads.</summary>
    public byte[] ReadBytes(string key)
    {
        if (!_index.TryGetValue(key, out var entry))
            throw new KeyNotFoundException($"Image '{key}' is not in the base64 image map {FilePath}.");
        var raw = new byte[entry.Length + 2];
        int read = 0;
        while (read < raw.Length)
        {
            int n = RandomAccess.Read(_handle, raw.AsSpan(read), entry.Offset + read);
            if (n == 0) throw new InvalidDataException($"{FilePath} ended inside the value of '{key}'; the file changed after it was indexed.");
            read += n;
        }
        if (!entry.Escaped)
        {
            var base64 = raw.AsSpan(1, entry.Length);
            var bytes = new byte[Base64.GetMaxDecodedFromUtf8Length(base64.Length)];
            var status = Base64.DecodeFromUtf8(base64, bytes, out _, out int written);
            if (status != System.Buffers.OperationStatus.Done)
                throw new InvalidDataException($"The value of '{key}' in {FilePath} is not valid base64 ({status}).");
            return bytes.AsSpan(0, written).ToArray();
        }
        var reader = new Utf8JsonReader(raw);
        reader.Read();
        return Convert.FromBase64String(reader.GetString()!);
    }

    public void Dispose() => _handle.Dispose();

    private static Base64ImageMap Index(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Base64 image map {path} does not exist.", path);
        var index = new Dictionary<string, Entry>(StringComparer.Ordinal);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        var buffer = new byte[1 << 20];
        int start = 0, filled = 0;
        long bufferFileOffset = 0;
        bool eof = false;
        var state = new JsonReaderState();
        int depth = 0;
        string? pendingKey = null;
        while (true)
        {
            var reader = new Utf8JsonReader(buffer.AsSpan(start, filled - start), eof, state);
            bool progressed = false;
            while (reader.Read())
            {
                progressed = true;
                switch (reader.TokenType)
                {
                    case JsonTokenType.StartObject:
                    case JsonTokenType.StartArray:
                        depth++;
                        break;
                    case JsonTokenType.EndObject:
                    case JsonTokenType.EndArray:
                        depth--;
                        break;
                    case JsonTokenType.PropertyName when depth == 1:
                        pendingKey = reader.GetString();
                        break;
                    case JsonTokenType.String when depth == 1 && pendingKey is not null:
                        long offset = bufferFileOffset + start + reader.TokenStartIndex;
                        index[pendingKey] = new Entry(offset, reader.ValueSpan.Length, reader.ValueIsEscaped);
                        pendingKey = null;
                        break;
                }
                if (depth == 1 && reader.TokenType != JsonTokenType.PropertyName) pendingKey = null;
            }
            start += (int)reader.BytesConsumed;
            state = reader.CurrentState;
            if (eof) break;
            // Keep the unconsumed tail, grow when one token (a large image) does not fit, then read on.
            int tail = filled - start;
            if (!progressed && start == 0 && filled == buffer.Length)
            {
                Array.Resize(ref buffer, buffer.Length * 2);
            }
            else if (start > 0)
            {
                Buffer.BlockCopy(buffer, start, buffer, 0, tail);
                bufferFileOffset += start;
                start = 0;
                filled = tail;
            }
            int n = stream.Read(buffer, filled, buffer.Length - filled);
            if (n == 0) eof = true;
            filled += n;
        }
        return new Base64ImageMap(path, index);
    }
}

/// <summary>Reads the encoded bytes behind any <see cref="ImageRef"/> (decoding is <c>VisualChat.Vision.Imaging.ImageLoader</c>'s job).</summary>
public static class ImageRefs
{
    public static byte[] ReadBytes(ImageRef image) => image switch
    {
        FileImageRef f => File.ReadAllBytes(f.Path),
        Base64MapImageRef m => Base64ImageMap.Open(m.MapFile).ReadBytes(m.Key),
        _ => throw new NotSupportedException($"Unknown image reference type {image.GetType().Name}."),
    };

    public static bool Exists(ImageRef image) => image switch
    {
        FileImageRef f => File.Exists(f.Path),
        Base64MapImageRef m => File.Exists(m.MapFile) && Base64ImageMap.Open(m.MapFile).Contains(m.Key),
        _ => false,
    };
}
