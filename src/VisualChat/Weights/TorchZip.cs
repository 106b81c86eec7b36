using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace VisualChat.Weights;

/// <summary>
/// The central directory of the zip archive that <c>torch.save</c> writes. Its entries are STORED (uncompressed),
/// so each entry's bytes can be read in place at <see cref="ZipEntry.DataOffset"/>.
/// </summary>
internal sealed class TorchZip
{
    public sealed record ZipEntry(string Name, long DataOffset, long Size, bool Stored);

    private const uint EndOfDirectorySignature = 0x06054b50;
    private const uint Zip64LocatorSignature = 0x07064b50;
    private const uint Zip64EndOfDirectorySignature = 0x06064b50;
    private const uint DirectoryEntrySignature = 0x02014b50;
    private const uint LocalHeaderSignature = 0x04034b50;

    private readonly string _path;
    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, (long LocalHeader, long Size, bool Stored)> _directory;

    public IReadOnlyCollection<string> Names => _directory.Keys;

    private TorchZip(string path, SafeFileHandle handle, Dictionary<string, (long, long, bool)> directory)
    {
        _path = path;
        _handle = handle;
        _directory = directory;
    }

    public static TorchZip Read(string path, SafeFileHandle handle)
    {
        long fileLength = RandomAccess.GetLength(handle);
        int tailLength = (int)Math.Min(fileLength, 22 + 65535);
        var tail = new byte[tailLength];
        ReadExactly(handle, tail, fileLength - tailLength, path);
        int end = -1;
        for (int i = tailLength - 22; i >= 0; i--)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(i)) == EndOfDirectorySignature)
            {
                end = i;
                break;
            }
        }
        if (end < 0)
        {
            throw Corrupt(path, "no zip end-of-central-directory record (not a zip file, or truncated)");
        }
        long entryCount = BinaryPrimitives.ReadUInt16LittleEndian(tail.AsSpan(end + 10));
        long directorySize = BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(end + 12));
        long directoryOffset = BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(end + 16));
        if (entryCount == 0xFFFF || directorySize == 0xFFFFFFFF || directoryOffset == 0xFFFFFFFF)
        {
            (entryCount, directorySize, directoryOffset) = ReadZip64End(path, handle, tail, end);
        }
        if (directoryOffset < 0 || directorySize < 0 || directoryOffset + directorySize > fileLength || directorySize > int.MaxValue)
        {
            throw Corrupt(path, "the zip central directory lies outside the file");
        }
        var directory = new byte[directorySize];
        ReadExactly(handle, directory, directoryOffset, path);
        return new TorchZip(path, handle, ParseDirectory(path, directory, entryCount, fileLength));
    }

    private static (long, long, long) ReadZip64End(string path, SafeFileHandle handle, byte[] tail, int end)
    {
        int locator = end - 20;
        if (locator < 0 || BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(locator)) != Zip64LocatorSignature)
        {
            throw Corrupt(path, "the zip64 end-of-central-directory locator is missing");
        }
        long recordOffset = (long)BinaryPrimitives.ReadUInt64LittleEndian(tail.AsSpan(locator + 8));
        var record = new byte[56];
        ReadExactly(handle, record, recordOffset, path);
        if (BinaryPrimitives.ReadUInt32LittleEndian(record) != Zip64EndOfDirectorySignature)
        {
            throw Corrupt(path, "the zip64 end-of-central-directory record is corrupt");
        }
        return ((long)BinaryPrimitives.ReadUInt64LittleEndian(record.AsSpan(32)),
                (long)BinaryPrimitives.ReadUInt64LittleEndian(record.AsSpan(40)),
                (long)BinaryPrimitives.ReadUInt64LittleEndian(record.AsSpan(48)));
    }

    private static Dictionary<string, (long, long, bool)> ParseDirectory(string path, byte[] directory, long entryCount, long fileLength)
    {
        var entries = new Dictionary<string, (long, long, bool)>(StringComparer.Ordinal);
        int position = 0;
        for (long i = 0; i < entryCount; i++)
        {
            if (position + 46 > directory.Length || BinaryPrimitives.ReadUInt32LittleEndian(directory.AsSpan(position)) != DirectoryEntrySignature)
            {
                throw Corrupt(path, "the zip central directory is corrupt");
            }
            var record = directory.AsSpan(position);
            int method = BinaryPrimitives.ReadUInt16LittleEndian(record[10..]);
            long compressedSize = BinaryPrimitives.ReadUInt32LittleEndian(record[20..]);
            long size = BinaryPrimitives.ReadUInt32LittleEndian(record[24..]);
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(record[28..]);
            int extraLength = BinaryPrimitives.ReadUInt16LittleEndian(record[30..]);
            int commentLength = BinaryPrimitives.ReadUInt16LittleEndian(record[32..]);
            long localHeader = BinaryPrimitives.ReadUInt32LittleEndian(record[42..]);
            if (position + 46 + nameLength + extraLength > directory.Length)
            {
                throw Corrupt(path, "the zip central directory is corrupt");
            }
            string name = Encoding.UTF8.GetString(record.Slice(46, nameLength));
            ApplyZip64Extra(record.Slice(46 + nameLength, extraLength), ref size, ref compressedSize, ref localHeader);
            if (localHeader < 0 || localHeader + 30 > fileLength || size < 0)
            {
                throw Corrupt(path, $"zip entry '{name}' points outside the file");
            }
            entries[name] = (localHeader, size, method == 0 && compressedSize == size);
            position += 46 + nameLength + extraLength + commentLength;
        }
        return entries;
    }

    private static void ApplyZip64Extra(ReadOnlySpan<byte> extra, ref long size, ref long compressedSize, ref long localHeader)
    {
        while (extra.Length >= 4)
        {
            int id = BinaryPrimitives.ReadUInt16LittleEndian(extra);
            int length = BinaryPrimitives.ReadUInt16LittleEndian(extra[2..]);
            var field = extra.Slice(4, Math.Min(length, extra.Length - 4));
            if (id == 0x0001)
            {
                int at = 0;
                if (size == 0xFFFFFFFF && at + 8 <= field.Length) { size = (long)BinaryPrimitives.ReadUInt64LittleEndian(field[at..]); at += 8; }
                if (compressedSize == 0xFFFFFFFF && at + 8 <= field.Length) { compressedSize = (long)BinaryPrimitives.ReadUInt64LittleEndian(field[at..]); at += 8; }
                if (localHeader == 0xFFFFFFFF && at + 8 <= field.Length) { localHeader = (long)BinaryPrimitives.ReadUInt64LittleEndian(field[at..]); }
                return;
            }
            extra = extra[Math.Min(extra.Length, 4 + length)..];
        }
    }

    public bool Contains(string name) => _directory.ContainsKey(name);

    /// <summary>Locates the data of a STORED entry; throws naming the archive when it is absent, compressed or truncated.</summary>
    public ZipEntry Entry(string name)
    {
        if (!_directory.TryGetValue(name, out var record))
        {
            throw Corrupt(_path, $"it has no entry '{name}'");
        }
        Span<byte> header = stackalloc byte[30];
        ReadExactly(_handle, header, record.LocalHeader, _path);
        if (BinaryPrimitives.ReadUInt32LittleEndian(header) != LocalHeaderSignature)
        {
            throw Corrupt(_path, $"the local header of entry '{name}' is corrupt");
        }
        long dataOffset = record.LocalHeader + 30 + BinaryPrimitives.ReadUInt16LittleEndian(header[26..]) + BinaryPrimitives.ReadUInt16LittleEndian(header[28..]);
        if (dataOffset + record.Size > RandomAccess.GetLength(_handle))
        {
            throw Corrupt(_path, $"entry '{name}' reaches past the end of the file (truncated)");
        }
        return new ZipEntry(name, dataOffset, record.Size, record.Stored);
    }

    public byte[] ReadAll(ZipEntry entry)
    {
        if (!entry.Stored)
        {
            throw Corrupt(_path, $"entry '{entry.Name}' is compressed, which torch.save never does; re-save it with torch.save or convert it to safetensors");
        }
        if (entry.Size > int.MaxValue)
        {
            throw Corrupt(_path, $"entry '{entry.Name}' is too large to read whole");
        }
        var bytes = new byte[entry.Size];
        ReadExactly(_handle, bytes, entry.DataOffset, _path);
        return bytes;
    }

    private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset, string path)
    {
        while (!buffer.IsEmpty)
        {
            int read = RandomAccess.Read(handle, buffer, offset);
            if (read <= 0)
            {
                throw Corrupt(path, $"it ends early (at byte {offset}; truncated)");
            }
            offset += read;
            buffer = buffer[read..];
        }
    }

    private static InvalidDataException Corrupt(string path, string problem) =>
        new($"PyTorch checkpoint '{path}' is not a valid torch.save zip archive: {problem}.");
}
