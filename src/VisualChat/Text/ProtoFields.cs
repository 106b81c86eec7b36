using System.Buffers.Binary;
using System.Text;

namespace VisualChat.Text;

/// <summary>Protobuf wire types used by the SentencePiece model file.</summary>
internal enum ProtoWireType
{
    Varint = 0,
    Fixed64 = 1,
    LengthDelimited = 2,
    Fixed32 = 5,
}

/// <summary>One field as it appeared on the wire; varint/fixed values live in <see cref="Number"/>,
/// length-delimited payloads in <see cref="Bytes"/>.</summary>
internal readonly record struct ProtoField(int FieldNumber, ProtoWireType WireType, ulong Number, byte[]? Bytes);

/// <summary>
/// A protobuf message kept as its list of wire fields. Typed accessors read and replace single fields, so fields this
/// code does not know about (and the presence of fields that hold default values) survive a load/save round trip
/// byte for byte.
/// </summary>
internal sealed class ProtoFields
{
    private readonly List<ProtoField> _fields;

    public ProtoFields() => _fields = new List<ProtoField>();

    private ProtoFields(List<ProtoField> fields) => _fields = fields;

    public IReadOnlyList<ProtoField> Fields => _fields;

    public static ProtoFields Parse(ReadOnlySpan<byte> data, string what)
    {
        var fields = new List<ProtoField>();
        int position = 0;
        while (position < data.Length)
        {
            ulong key = ReadVarint(data, ref position, what);
            int fieldNumber = (int)(key >> 3);
            var wireType = (ProtoWireType)(int)(key & 7);
            if (fieldNumber <= 0)
                throw new InvalidDataException($"{what}: invalid protobuf field number {fieldNumber} at byte {position}; the file is not a protobuf message.");
            switch (wireType)
            {
                case ProtoWireType.Varint:
                    fields.Add(new ProtoField(fieldNumber, wireType, ReadVarint(data, ref position, what), null));
                    break;
                case ProtoWireType.Fixed64:
                    RequireBytes(data, position, 8, what);
                    fields.Add(new ProtoField(fieldNumber, wireType, BinaryPrimitives.ReadUInt64LittleEndian(data[position..]), null));
                    position += 8;
                    break;
                case ProtoWireType.Fixed32:
                    RequireBytes(data, position, 4, what);
                    fields.Add(new ProtoField(fieldNumber, wireType, BinaryPrimitives.ReadUInt32LittleEndian(data[position..]), null));
                    position += 4;
                    break;
                case ProtoWireType.LengthDelimited:
                    ulong length = ReadVarint(data, ref position, what);
                    if (length > (ulong)(data.Length - position))
                        throw new InvalidDataException($"{what}: field {fieldNumber} claims {length} bytes but only {data.Length - position} remain; the file is truncated or not a SentencePiece model.");
                    fields.Add(new ProtoField(fieldNumber, wireType, 0, data.Slice(position, (int)length).ToArray()));
                    position += (int)length;
                    break;
                default:
                    throw new InvalidDataException($"{what}: unsupported protobuf wire type {(int)wireType} for field {fieldNumber} at byte {position}; the file is not a SentencePiece model.");
            }
        }
        return new ProtoFields(fields);
    }

    public ulong? GetVarint(int fieldNumber)
    {
        for (int i = _fields.Count - 1; i >= 0; i--)
            if (_fields[i].FieldNumber == fieldNumber && _fields[i].WireType == ProtoWireType.Varint) return _fields[i].Number;
        return null;
    }

    public bool GetBool(int fieldNumber, bool defaultValue) => GetVarint(fieldNumber) is { } v ? v != 0 : defaultValue;

    /// <summary>proto2 int32: negative values are sign-extended to 64 bits on the wire.</summary>
    public int GetInt32(int fieldNumber, int defaultValue) => GetVarint(fieldNumber) is { } v ? unchecked((int)(long)v) : defaultValue;

    public float GetFloat(int fieldNumber, float defaultValue)
    {
        for (int i = _fields.Count - 1; i >= 0; i--)
        {
            if (_fields[i].FieldNumber == fieldNumber && _fields[i].WireType == ProtoWireType.Fixed32)
                return BitConverter.Int32BitsToSingle(unchecked((int)(uint)_fields[i].Number));
        }

        return defaultValue;
    }

    public byte[]? GetBytes(int fieldNumber)
    {
        for (int i = _fields.Count - 1; i >= 0; i--)
            if (_fields[i].FieldNumber == fieldNumber && _fields[i].WireType == ProtoWireType.LengthDelimited) return _fields[i].Bytes;
        return null;
    }

    public string? GetString(int fieldNumber) => GetBytes(fieldNumber) is { } b ? Encoding.UTF8.GetString(b) : null;

    public IEnumerable<byte[]> GetRepeatedBytes(int fieldNumber)
    {
        foreach (var f in _fields)
            if (f.FieldNumber == fieldNumber && f.WireType == ProtoWireType.LengthDelimited) yield return f.Bytes!;
    }

    public void SetBool(int fieldNumber, bool value) => Set(new ProtoField(fieldNumber, ProtoWireType.Varint, value ? 1UL : 0UL, null));

    public void SetInt32(int fieldNumber, int value) => Set(new ProtoField(fieldNumber, ProtoWireType.Varint, unchecked((ulong)(long)value), null));

    public void SetFloat(int fieldNumber, float value) =>
        Set(new ProtoField(fieldNumber, ProtoWireType.Fixed32, unchecked((uint)BitConverter.SingleToInt32Bits(value)), null));

    public void SetBytes(int fieldNumber, byte[] value) => Set(new ProtoField(fieldNumber, ProtoWireType.LengthDelimited, 0, value));

    public void SetString(int fieldNumber, string value) => SetBytes(fieldNumber, Encoding.UTF8.GetBytes(value));

    /// <summary>Drops every occurrence of the field (used before rewriting a repeated field).</summary>
    public void RemoveAll(int fieldNumber) => _fields.RemoveAll(f => f.FieldNumber == fieldNumber);

    /// <summary>Appends a repeated entry after the last field with a number not above it, keeping wire order by number.</summary>
    public void AddBytes(int fieldNumber, byte[] value) =>
        _fields.Insert(InsertionIndex(fieldNumber), new ProtoField(fieldNumber, ProtoWireType.LengthDelimited, 0, value));

    private void Set(ProtoField field)
    {
        int existing = _fields.FindIndex(f => f.FieldNumber == field.FieldNumber);
        if (existing >= 0)
        {
            _fields[existing] = field;
            for (int i = _fields.Count - 1; i > existing; i--)
                if (_fields[i].FieldNumber == field.FieldNumber) _fields.RemoveAt(i);
            return;
        }
        // Protobuf serializers write known fields in field-number order; keep that so saved files look standard.
        _fields.Insert(InsertionIndex(field.FieldNumber), field);
    }

    private int InsertionIndex(int fieldNumber)
    {
        int index = _fields.Count;
        while (index > 0 && _fields[index - 1].FieldNumber > fieldNumber) index--;
        return index;
    }

    public byte[] ToBytes()
    {
        using var stream = new MemoryStream();
        WriteTo(stream);
        return stream.ToArray();
    }

    public void WriteTo(Stream stream)
    {
        Span<byte> buffer = stackalloc byte[10];
        foreach (var f in _fields)
        {
            WriteVarint(stream, ((ulong)(uint)f.FieldNumber << 3) | (uint)f.WireType, buffer);
            switch (f.WireType)
            {
                case ProtoWireType.Varint:
                    WriteVarint(stream, f.Number, buffer);
                    break;
                case ProtoWireType.Fixed64:
                    BinaryPrimitives.WriteUInt64LittleEndian(buffer, f.Number);
                    stream.Write(buffer[..8]);
                    break;
                case ProtoWireType.Fixed32:
                    BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)f.Number);
                    stream.Write(buffer[..4]);
                    break;
                case ProtoWireType.LengthDelimited:
                    WriteVarint(stream, (ulong)f.Bytes!.Length, buffer);
                    stream.Write(f.Bytes);
                    break;
            }
        }
    }

    private static void WriteVarint(Stream stream, ulong value, Span<byte> buffer)
    {
        int n = 0;
        while (value >= 0x80)
        {
            buffer[n++] = (byte)(value | 0x80);
            value >>= 7;
        }
        buffer[n++] = (byte)value;
        stream.Write(buffer[..n]);
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> data, ref int position, string what)
    {
        ulong result = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (position >= data.Length)
                throw new InvalidDataException($"{what}: protobuf varint runs past the end of the data; the file is truncated or not a SentencePiece model.");
            byte b = data[position++];
            result |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return result;
        }
        throw new InvalidDataException($"{what}: protobuf varint longer than 10 bytes at byte {position}; the file is not a SentencePiece model.");
    }

    private static void RequireBytes(ReadOnlySpan<byte> data, int position, int count, string what)
    {
        if (data.Length - position < count)
            throw new InvalidDataException($"{what}: protobuf fixed-width field runs past the end of the data; the file is truncated.");
    }
}
