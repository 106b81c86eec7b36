using Microsoft.Win32.SafeHandles;
using TorchSharp;

namespace VisualChat.Weights;

/// <summary>
/// A PyTorch <c>.bin</c>/<c>.pt</c> checkpoint in the zip format <c>torch.save</c> writes since 1.6
/// (<c>{top}/data.pkl</c>, <c>{top}/data/{key}</c>, <c>{top}/version</c>). The pickle is read whole through a safe
/// unpickler at open; tensor data is read lazily from the uncompressed storage entries.
/// </summary>
internal sealed class TorchBinFile : ITensorSource
{
    /// <summary>Keys under which training frameworks (DeepSpeed, Lightning, plain scripts) nest the state dict.</summary>
    private static readonly string[] WrapperKeys = ["module", "state_dict", "model"];

    private readonly string _path;
    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, (TensorEntry Entry, TorchTensorView View, TorchZip.ZipEntry Data)> _tensors;

    public IReadOnlyList<TensorEntry> Entries { get; }

    private TorchBinFile(string path, SafeFileHandle handle, Dictionary<string, (TensorEntry, TorchTensorView, TorchZip.ZipEntry)> tensors, List<TensorEntry> entries)
    {
        _path = path;
        _handle = handle;
        _tensors = tensors;
        Entries = entries;
    }

    public static TorchBinFile Open(string path)
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

    /// <summary>The unpickled root object of a <c>torch.save</c> archive that need not hold tensors, e.g. the argument
    /// dict DeepSpeed-VisualChat saves as <c>train_args.pt</c> (dicts, lists, tuples as object?[], strings, numbers).</summary>
    public static object? LoadObject(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        var (zip, pickleName) = OpenArchive(path, handle);
        return TorchPickleReader.Load(path, zip.ReadAll(zip.Entry(pickleName)));
    }

    private static (TorchZip Zip, string PickleName) OpenArchive(string path, SafeFileHandle handle)
    {
        if (RandomAccess.GetLength(handle) >= 2)
        {
            Span<byte> magic = stackalloc byte[2];
            RandomAccess.Read(handle, magic, 0);
            if (magic[0] != (byte)'P' || magic[1] != (byte)'K')
            {
                throw new InvalidDataException(
                    $"PyTorch checkpoint '{path}' is not a zip archive; only the format torch.save writes since PyTorch 1.6 is supported — re-save it with a recent torch or convert it to safetensors.");
            }
        }
        var zip = TorchZip.Read(path, handle);
        var pickleName = zip.Names.Where(n => n.EndsWith("/data.pkl", StringComparison.Ordinal) && n.IndexOf('/') == n.Length - "/data.pkl".Length)
            .SingleOrDefault() ?? throw new InvalidDataException($"PyTorch checkpoint '{path}' has no '<folder>/data.pkl' entry.");
        return (zip, pickleName);
    }

    private static TorchBinFile Parse(string path, SafeFileHandle handle)
    {
        var (zip, pickleName) = OpenArchive(path, handle);
        string prefix = pickleName[..^"data.pkl".Length];
        var root = TorchPickleReader.Load(path, zip.ReadAll(zip.Entry(pickleName)));
        var stateDict = Unwrap(path, root);

        var tensors = new Dictionary<string, (TensorEntry, TorchTensorView, TorchZip.ZipEntry)>(StringComparer.Ordinal);
        var entries = new List<TensorEntry>();
        var storageEntries = new Dictionary<string, TorchZip.ZipEntry>(StringComparer.Ordinal);
        foreach (var (key, value) in stateDict)
        {
            if (key is not string name || value is not TorchTensorView view)
            {
                continue; // Non-tensor values (step counters, configs) are not weights.
            }
            if (!storageEntries.TryGetValue(view.Storage.Key, out var data))
            {
                data = zip.Entry(prefix + "data/" + view.Storage.Key);
                if (!data.Stored)
                {
                    throw new InvalidDataException($"PyTorch checkpoint '{path}': storage entry '{data.Name}' is compressed, which torch.save never does; convert the checkpoint to safetensors.");
                }
                storageEntries.Add(view.Storage.Key, data);
            }
            CheckView(path, name, view, data);
            var entry = new TensorEntry(name, view.Storage.DType, view.Shape, path);
            tensors.Add(name, (entry, view, data));
            entries.Add(entry);
        }
        return new TorchBinFile(path, handle, tensors, entries);
    }

    private static PickleDict Unwrap(string path, object? root)
    {
        if (root is not PickleDict dict)
        {
            throw new InvalidDataException($"PyTorch checkpoint '{path}' does not hold a dict of tensors (found {root?.GetType().Name ?? "None"}).");
        }
        if (dict.Values.Any(v => v is TorchTensorView))
        {
            return dict;
        }
        foreach (var key in WrapperKeys)
        {
            if (dict.TryGetValue(key, out var nested) && nested is PickleDict inner)
            {
                return inner;
            }
        }
        return dict;
    }

    private static void CheckView(string path, string name, TorchTensorView view, TorchZip.ZipEntry data)
    {
        long elementSize = DTypes.ElementSize(view.Storage.DType);
        if (view.Storage.NumElements < 0 || view.Storage.NumElements * elementSize > data.Size)
        {
            throw new InvalidDataException(
                $"PyTorch checkpoint '{path}': storage '{data.Name}' of tensor '{name}' should hold {view.Storage.NumElements} elements but has {data.Size} bytes (truncated?).");
        }
        if (DTypes.NumberOfElements(view.Shape) == 0)
        {
            return;
        }
        long last = view.StorageOffset;
        for (int i = 0; i < view.Shape.Length; i++)
        {
            last += (view.Shape[i] - 1) * view.Stride[i];
        }
        if (view.StorageOffset < 0 || last >= view.Storage.NumElements)
        {
            throw new InvalidDataException(
                $"PyTorch checkpoint '{path}': tensor '{name}' (shape {DTypes.FormatShape(view.Shape)}, offset {view.StorageOffset}, stride {DTypes.FormatShape(view.Stride)}) reaches outside its storage of {view.Storage.NumElements} elements.");
        }
    }

    private static bool IsContiguous(TorchTensorView view)
    {
        long expected = 1;
        for (int i = view.Shape.Length - 1; i >= 0; i--)
        {
            if (view.Shape[i] != 1 && view.Stride[i] != expected)
            {
                return false;
            }
            expected *= view.Shape[i];
        }
        return true;
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public TensorEntry Describe(string name) =>
        _tensors.TryGetValue(name, out var tensor)
            ? tensor.Entry
            : throw new KeyNotFoundException($"Tensor '{name}' is not in '{_path}'.");

    public torch.Tensor Read(string name, torch.ScalarType? dtype = null, torch.Device? device = null)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        if (!_tensors.TryGetValue(name, out var tensor))
        {
            throw new KeyNotFoundException($"Tensor '{name}' is not in '{_path}'.");
        }
        var (entry, view, data) = tensor;
        long elementSize = DTypes.ElementSize(entry.DType);
        long start = data.DataOffset + view.StorageOffset * elementSize;
        if (IsContiguous(view) || DTypes.NumberOfElements(view.Shape) == 0)
        {
            return TensorBytes.ReadContiguous(_handle, start, entry.DType, view.Shape, _path, name, dtype, device);
        }
        // A strided view (e.g. a transpose, or a slice of a shared storage): read the span it covers, then gather.
        long span = 1;
        for (int i = 0; i < view.Shape.Length; i++)
        {
            span += (view.Shape[i] - 1) * view.Stride[i];
        }
        using var covered = TensorBytes.ReadContiguous(_handle, start, entry.DType, [span], _path, name, null, null);
        using var strided = covered.as_strided(view.Shape, view.Stride, 0);
        return TensorBytes.Convert(strided.contiguous(), dtype, device);
    }

    public void Dispose() => _handle.Dispose();
}
