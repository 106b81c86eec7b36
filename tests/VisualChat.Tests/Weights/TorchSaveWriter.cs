using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Tests.Weights;

/// <summary>
/// Writes what <c>torch.save</c> writes (zip format, pickle protocol 2): <c>archive/data.pkl</c> with tensors as
/// <c>torch._utils._rebuild_tensor_v2</c> over persistent storages <c>archive/data/{i}</c>, stored uncompressed, and
/// <c>archive/version</c>. The writer side of the safe unpickler, for fixtures in exact checkpoint layouts (a
/// DeepSpeed-VisualChat pytorch_model.bin and its train_args.pt) without a Python install.
/// </summary>
internal static class TorchSaveWriter
{
    /// <summary>An OrderedDict of tensors, as <c>model.state_dict()</c> saves.</summary>
    public static void SaveStateDict(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors) =>
        Save(path, tensors.Select(p => new KeyValuePair<string, object?>(p.Key, p.Value)), ordered: true);

    /// <summary>A plain dict of strings, longs, doubles, bools, nulls, string lists and tensors (e.g. <c>vars(args)</c>).</summary>
    public static void SaveDict(string path, IEnumerable<KeyValuePair<string, object?>> values) => Save(path, values, ordered: false);

    static void Save(string path, IEnumerable<KeyValuePair<string, object?>> items, bool ordered)
    {
        var storages = new List<Tensor>();
        var pickle = new MemoryStream();
        pickle.Write([0x80, 2]);                                             // PROTO 2
        if (ordered) {
            Global(pickle, "collections", "OrderedDict");
            pickle.WriteByte((byte)')');                                    // EMPTY_TUPLE
            pickle.WriteByte((byte)'R');                                    // REDUCE
        } else {
            pickle.WriteByte((byte)'}');                                    // EMPTY_DICT
        }
        pickle.WriteByte((byte)'(');                                        // MARK
        foreach (var (key, value) in items) {
            String(pickle, key);
            Value(pickle, value, storages);
        }
        pickle.WriteByte((byte)'u');                                        // SETITEMS
        pickle.WriteByte((byte)'.');                                        // STOP

        string temp = path + ".tmp";
        using (var file = File.Create(temp))
        using (var zip = new ZipArchive(file, ZipArchiveMode.Create)) {
            Entry(zip, "archive/data.pkl", pickle.ToArray());
            for (int i = 0; i < storages.Count; i++) Entry(zip, $"archive/data/{i}", storages[i].bytes.ToArray());
            Entry(zip, "archive/version", Encoding.ASCII.GetBytes("3\n"));
        }
        File.Move(temp, path, overwrite: true);
    }

    static void Entry(ZipArchive zip, string name, byte[] data)
    {
        using var stream = zip.CreateEntry(name, CompressionLevel.NoCompression).Open();
        stream.Write(data);
    }

    static void Value(MemoryStream pickle, object? value, List<Tensor> storages)
    {
        switch (value) {
            case null: pickle.WriteByte((byte)'N'); break;
            case bool b: pickle.WriteByte(b ? (byte)0x88 : (byte)0x89); break;
            case int i: Int(pickle, i); break;
            case long l: Int(pickle, l); break;
            case double d:
                pickle.WriteByte((byte)'G');
                Span<byte> bytes = stackalloc byte[8];
                BinaryPrimitives.WriteDoubleBigEndian(bytes, d);
                pickle.Write(bytes);
                break;
            case string s: String(pickle, s); break;
            case IEnumerable<string> list:
                pickle.WriteByte((byte)']');                                // EMPTY_LIST
                pickle.WriteByte((byte)'(');
                foreach (var item in list) String(pickle, item);
                pickle.WriteByte((byte)'e');                                // APPENDS
                break;
            case Tensor tensor: TensorValue(pickle, tensor, storages); break;
            default: throw new ArgumentException($"{value.GetType().Name} is not written by this fixture writer.");
        }
    }

    static void TensorValue(MemoryStream pickle, Tensor tensor, List<Tensor> storages)
    {
        var contiguous = tensor.detach().cpu().contiguous();
        int key = storages.Count;
        storages.Add(contiguous);
        Global(pickle, "torch._utils", "_rebuild_tensor_v2");
        pickle.WriteByte((byte)'(');
        pickle.WriteByte((byte)'(');                                        // persistent id tuple
        String(pickle, "storage");
        Global(pickle, "torch", StorageName(contiguous.dtype));
        String(pickle, key.ToString());
        String(pickle, "cpu");
        Int(pickle, contiguous.numel());
        pickle.WriteByte((byte)'t');
        pickle.WriteByte((byte)'Q');                                        // BINPERSID
        Int(pickle, 0);                                                     // storage offset
        Tuple(pickle, contiguous.shape);
        Tuple(pickle, contiguous.stride());
        pickle.WriteByte(0x89);                                             // requires_grad False
        Global(pickle, "collections", "OrderedDict");                       // backward hooks
        pickle.WriteByte((byte)')');
        pickle.WriteByte((byte)'R');
        pickle.WriteByte((byte)'t');
        pickle.WriteByte((byte)'R');
    }

    static string StorageName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "FloatStorage",
        ScalarType.Float16 => "HalfStorage",
        ScalarType.BFloat16 => "BFloat16Storage",
        ScalarType.Int64 => "LongStorage",
        _ => throw new ArgumentException($"{dtype} is not written by this fixture writer."),
    };

    static void Tuple(MemoryStream pickle, long[] values)
    {
        pickle.WriteByte((byte)'(');
        foreach (var v in values) Int(pickle, v);
        pickle.WriteByte((byte)'t');
    }

    static void Global(MemoryStream pickle, string module, string name)
    {
        pickle.WriteByte((byte)'c');
        pickle.Write(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));
    }

    static void String(MemoryStream pickle, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        pickle.WriteByte((byte)'X');                                        // BINUNICODE
        Span<byte> length = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(length, (uint)bytes.Length);
        pickle.Write(length);
        pickle.Write(bytes);
    }

    static void Int(MemoryStream pickle, long value)
    {
        Span<byte> bytes = stackalloc byte[8];
        if (value is >= int.MinValue and <= int.MaxValue) {
            pickle.WriteByte((byte)'J');                                    // BININT
            BinaryPrimitives.WriteInt32LittleEndian(bytes, (int)value);
            pickle.Write(bytes[..4]);
        } else {
            pickle.WriteByte(0x8a);                                         // LONG1
            pickle.WriteByte(8);
            BinaryPrimitives.WriteInt64LittleEndian(bytes, value);
            pickle.Write(bytes);
        }
    }
}
