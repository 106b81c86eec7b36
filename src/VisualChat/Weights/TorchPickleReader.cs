using System.Buffers.Binary;
using System.Text;
using TorchSharp;

namespace VisualChat.Weights;

/// <summary>A storage referenced by a persistent id: the zip entry <c>data/{Key}</c> holding <see cref="NumElements"/> elements.</summary>
internal sealed record TorchStorage(string Key, torch.ScalarType DType, long NumElements);

/// <summary>A tensor as <c>torch._utils._rebuild_tensor_v2</c> describes it: a strided view of a storage.</summary>
internal sealed record TorchTensorView(TorchStorage Storage, long StorageOffset, long[] Shape, long[] Stride);

/// <summary>
/// A restricted unpickler for the <c>data.pkl</c> of a <c>torch.save</c> archive. It understands the opcodes that
/// pickle protocols 2–4 use for state dicts and resolves only the globals that rebuild plain tensors, storages and
/// <c>OrderedDict</c>s; anything else is refused before it could be called, so no code from the file ever runs.
/// </summary>
internal sealed class TorchPickleReader
{
    private sealed record PickleGlobal(string Module, string Name)
    {
        public override string ToString() => $"{Module}.{Name}";
    }

    private static readonly object Mark = new();

    private static readonly HashSet<string> AllowedCallables = new(StringComparer.Ordinal)
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        // Plain values that DeepSpeed model-state files keep beside the weights (param_shapes, device names).
        "torch.Size",
        "torch.device",
    };

    private readonly string _file;
    private readonly byte[] _data;
    private int _position;
    private readonly List<object?> _stack = new();
    private readonly Dictionary<long, object?> _memo = new();
    private readonly Dictionary<string, TorchStorage> _storages = new(StringComparer.Ordinal);

    private TorchPickleReader(string file, byte[] data)
    {
        _file = file;
        _data = data;
    }

    /// <summary>Unpickles <paramref name="data"/> (from <paramref name="file"/>, named in errors) into dictionaries, lists,
    /// tuples (object?[]), strings, numbers and <see cref="TorchTensorView"/>s.</summary>
    public static object? Load(string file, byte[] data) => new TorchPickleReader(file, data).Run();

    private object? Run()
    {
        while (true)
        {
            if (_position >= _data.Length)
            {
                throw Corrupt("the pickle ends without STOP (truncated)");
            }
            byte opcode = _data[_position++];
            switch (opcode)
            {
                case 0x80: ReadBytes(1); break;                                      // PROTO
                case 0x95: ReadBytes(8); break;                                      // FRAME: framing only groups opcodes
                case (byte)'.': return Pop();                                        // STOP
                case (byte)'(': _stack.Add(Mark); break;                             // MARK
                case (byte)'0': Pop(); break;                                        // POP
                case (byte)'1': PopToMark(); break;                                  // POP_MARK
                case (byte)'2': Push(Peek()); break;                                 // DUP
                case (byte)'N': Push(null); break;                                   // NONE
                case 0x88: Push(true); break;                                        // NEWTRUE
                case 0x89: Push(false); break;                                       // NEWFALSE
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4))); break;  // BININT
                case (byte)'K': Push((long)ReadBytes(1)[0]); break;                  // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadBytes(2))); break; // BININT2
                case 0x8a: Push(ReadLong(ReadBytes(1)[0])); break;                   // LONG1
                case 0x8b: Push(ReadLong(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))))); break; // LONG4
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadBytes(8))); break; // BINFLOAT
                case (byte)'X': Push(ReadUtf8(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))))); break; // BINUNICODE
                case 0x8c: Push(ReadUtf8(ReadBytes(1)[0])); break;                   // SHORT_BINUNICODE
                case 0x8d: Push(ReadUtf8(checked((int)BinaryPrimitives.ReadUInt64LittleEndian(ReadBytes(8))))); break; // BINUNICODE8
                case (byte)'T': Push(ReadLatin1(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))))); break; // BINSTRING
                case (byte)'U': Push(ReadLatin1(ReadBytes(1)[0])); break;            // SHORT_BINSTRING
                case (byte)'B': Push(ReadBytes(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4)))).ToArray()); break; // BINBYTES
                case (byte)'C': Push(ReadBytes(ReadBytes(1)[0]).ToArray()); break;   // SHORT_BINBYTES
                case (byte)')': Push(Array.Empty<object?>()); break;                 // EMPTY_TUPLE
                case (byte)'t': Push(PopToMark().ToArray()); break;                  // TUPLE
                case 0x85: Push(PopTuple(1)); break;                                 // TUPLE1
                case 0x86: Push(PopTuple(2)); break;                                 // TUPLE2
                case 0x87: Push(PopTuple(3)); break;                                 // TUPLE3
                case (byte)']': Push(new List<object?>()); break;                    // EMPTY_LIST
                case (byte)'l': Push(PopToMark()); break;                            // LIST
                case (byte)'a': Append(); break;                                     // APPEND
                case (byte)'e': Appends(); break;                                    // APPENDS
                case (byte)'}': Push(new PickleDict()); break;                       // EMPTY_DICT
                case (byte)'d': Push(DictFrom(PopToMark())); break;                  // DICT
                case (byte)'s': SetItem(); break;                                    // SETITEM
                case (byte)'u': SetItems(); break;                                   // SETITEMS
                case (byte)'q': _memo[ReadBytes(1)[0]] = Peek(); break;              // BINPUT
                case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))] = Peek(); break; // LONG_BINPUT
                case 0x94: _memo[_memo.Count] = Peek(); break;                       // MEMOIZE
                case (byte)'h': Push(Recall(ReadBytes(1)[0])); break;                // BINGET
                case (byte)'j': Push(Recall(BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4)))); break; // LONG_BINGET
                case (byte)'c': Push(Resolve(ReadLine(), ReadLine())); break;       // GLOBAL
                case 0x93: StackGlobal(); break;                                     // STACK_GLOBAL
                case (byte)'R': Reduce(); break;                                     // REDUCE
                case (byte)'Q': Push(PersistentLoad(Pop())); break;                  // BINPERSID
                case (byte)'b': Build(); break;                                      // BUILD
                default:
                    throw Corrupt($"pickle opcode 0x{opcode:x2} at byte {_position - 1} is not supported by the safe reader (only plain state dicts are); convert the checkpoint to safetensors");
            }
        }
    }

    private void Push(object? value) => _stack.Add(value);

    private object? Pop()
    {
        if (_stack.Count == 0 || ReferenceEquals(_stack[^1], Mark))
        {
            throw Corrupt($"the pickle pops an empty stack at byte {_position - 1}");
        }
        var value = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private object? Peek() => _stack.Count > 0 && !ReferenceEquals(_stack[^1], Mark)
        ? _stack[^1]
        : throw Corrupt($"the pickle reads an empty stack at byte {_position - 1}");

    private List<object?> PopToMark()
    {
        int mark = _stack.FindLastIndex(item => ReferenceEquals(item, Mark));
        if (mark < 0)
        {
            throw Corrupt($"the pickle has no MARK for the opcode at byte {_position - 1}");
        }
        var items = _stack.GetRange(mark + 1, _stack.Count - mark - 1);
        _stack.RemoveRange(mark, _stack.Count - mark);
        return items;
    }

    private object?[] PopTuple(int count)
    {
        var items = new object?[count];
        for (int i = count - 1; i >= 0; i--)
        {
            items[i] = Pop();
        }
        return items;
    }

    private ReadOnlySpan<byte> ReadBytes(int count)
    {
        if (count < 0 || _position + count > _data.Length)
        {
            throw Corrupt("the pickle ends inside an opcode argument (truncated)");
        }
        var span = _data.AsSpan(_position, count);
        _position += count;
        return span;
    }

    private string ReadUtf8(int count) => Encoding.UTF8.GetString(ReadBytes(count));

    private string ReadLatin1(int count) => Encoding.Latin1.GetString(ReadBytes(count));

    private string ReadLine()
    {
        int end = Array.IndexOf(_data, (byte)'\n', _position);
        if (end < 0)
        {
            throw Corrupt("the pickle ends inside a GLOBAL name (truncated)");
        }
        string line = Encoding.UTF8.GetString(_data, _position, end - _position);
        _position = end + 1;
        return line;
    }

    private object ReadLong(int count)
    {
        var bytes = ReadBytes(count);
        if (count > 8)
        {
            throw Corrupt($"an integer of {count} bytes at byte {_position} does not fit 64 bits");
        }
        long value = 0;
        for (int i = count - 1; i >= 0; i--)
        {
            value = (value << 8) | bytes[i];
        }
        if (count is > 0 and < 8 && (bytes[count - 1] & 0x80) != 0)
        {
            value -= 1L << (8 * count);
        }
        return value;
    }

    private object? Recall(long key) =>
        _memo.TryGetValue(key, out var value) ? value : throw Corrupt($"the pickle recalls unknown memo slot {key}");

    private void StackGlobal()
    {
        var name = Pop() as string;
        var module = Pop() as string;
        if (name is null || module is null)
        {
            throw Corrupt("STACK_GLOBAL expects two strings");
        }
        Push(Resolve(module, name));
    }

    private PickleGlobal Resolve(string module, string name)
    {
        var global = new PickleGlobal(module, name);
        bool isStorage = module == "torch" && DTypes.IsTorchStorageName(name);
        if (!isStorage && !AllowedCallables.Contains(global.ToString()))
        {
            throw new InvalidDataException(
                $"PyTorch checkpoint '{_file}': the safe unpickler refuses global '{global}' (only tensors, storages and OrderedDict are allowed, and nothing in the file is ever executed); convert the checkpoint to safetensors with a trusted Python environment.");
        }
        return global;
    }

    private void Append()
    {
        var value = Pop();
        if (Peek() is not List<object?> list)
        {
            throw Corrupt("APPEND to something that is not a list");
        }
        list.Add(value);
    }

    private void Appends()
    {
        var items = PopToMark();
        if (Peek() is not List<object?> list)
        {
            throw Corrupt("APPENDS to something that is not a list");
        }
        list.AddRange(items);
    }

    private void SetItem()
    {
        var value = Pop();
        var key = Pop();
        if (Peek() is not PickleDict dict)
        {
            throw Corrupt("SETITEM on something that is not a dict");
        }
        dict[Key(key)] = value;
    }

    private void SetItems()
    {
        var items = PopToMark();
        if (Peek() is not PickleDict dict || items.Count % 2 != 0)
        {
            throw Corrupt("SETITEMS on something that is not a dict, or with an odd number of items");
        }
        for (int i = 0; i < items.Count; i += 2)
        {
            dict[Key(items[i])] = items[i + 1];
        }
    }

    private PickleDict DictFrom(List<object?> items)
    {
        var dict = new PickleDict();
        for (int i = 0; i + 1 < items.Count; i += 2)
        {
            dict[Key(items[i])] = items[i + 1];
        }
        return dict;
    }

    private object Key(object? key) => key switch
    {
        string or long or bool or double => key,
        _ => throw Corrupt($"a dict key of type {key?.GetType().Name ?? "None"} is not supported"),
    };

    private void Reduce()
    {
        var arguments = Pop() as object?[] ?? throw Corrupt("REDUCE arguments are not a tuple");
        var callable = Pop() as PickleGlobal ?? throw Corrupt("REDUCE calls something that is not an allowed global");
        Push(callable.ToString() switch
        {
            "collections.OrderedDict" => NewOrderedDict(arguments),
            "torch._utils._rebuild_tensor_v2" => RebuildTensor(arguments),
            "torch.Size" => arguments is [object?[] dimensions] ? dimensions : throw Corrupt("torch.Size called with unexpected arguments"),
            "torch.device" => string.Join(":", arguments.Select(a => a?.ToString())),
            "torch._utils._rebuild_parameter" or "torch._utils._rebuild_parameter_with_state" =>
                arguments.Length >= 1 && arguments[0] is TorchTensorView view ? view : throw Corrupt("_rebuild_parameter without a tensor"),
            _ => throw new InvalidDataException(
                $"PyTorch checkpoint '{_file}': the safe unpickler refuses to call global '{callable}'; convert the checkpoint to safetensors."),
        });
    }

    private PickleDict NewOrderedDict(object?[] arguments)
    {
        var dict = new PickleDict();
        if (arguments.Length == 1 && arguments[0] is List<object?> pairs)
        {
            foreach (var pair in pairs)
            {
                if (pair is not object?[] { Length: 2 } keyValue)
                {
                    throw Corrupt("OrderedDict built from something other than key/value pairs");
                }
                dict[Key(keyValue[0])] = keyValue[1];
            }
        }
        else if (arguments.Length != 0)
        {
            throw Corrupt("OrderedDict called with unsupported arguments");
        }
        return dict;
    }

    private TorchTensorView RebuildTensor(object?[] arguments)
    {
        if (arguments.Length < 4 || arguments[0] is not TorchStorage storage || arguments[1] is not long offset
            || arguments[2] is not object?[] size || arguments[3] is not object?[] stride || size.Length != stride.Length)
        {
            throw Corrupt("_rebuild_tensor_v2 called with unexpected arguments");
        }
        return new TorchTensorView(storage, offset, ToLongs(size), ToLongs(stride));
    }

    private long[] ToLongs(object?[] values) =>
        values.Select(v => v is long l && l >= 0 ? l : throw Corrupt("a tensor size or stride is not a non-negative integer")).ToArray();

    private TorchStorage PersistentLoad(object? id)
    {
        if (id is not object?[] { Length: 5 } fields || fields[0] as string != "storage"
            || fields[1] is not PickleGlobal { Module: "torch" } storageType || fields[2] is not string key || fields[4] is not long numElements)
        {
            throw Corrupt("a persistent id is not a ('storage', type, key, location, size) tuple");
        }
        var dtype = DTypes.FromTorchStorageName(storageType.Name) ?? throw Corrupt($"unknown storage type {storageType}");
        if (_storages.TryGetValue(key, out var known))
        {
            return known;
        }
        var storage = new TorchStorage(key, dtype, numElements);
        _storages.Add(key, storage);
        return storage;
    }

    private void Build()
    {
        Pop(); // The state: an OrderedDict's `_metadata` (module versions) or a parameter's empty state; neither matters here.
        if (Peek() is not (PickleDict or TorchTensorView))
        {
            throw Corrupt("BUILD on an object other than a dict or tensor");
        }
    }

    private InvalidDataException Corrupt(string problem) =>
        new($"PyTorch checkpoint '{_file}': {problem}.");
}

/// <summary>A pickled dict, keeping insertion order.</summary>
internal sealed class PickleDict : OrderedDictionary<object, object?>;
