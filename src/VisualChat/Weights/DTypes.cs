using TorchSharp;

namespace VisualChat.Weights;

/// <summary>Element types as the safetensors header and PyTorch pickles name them.</summary>
internal static class DTypes
{
    private static readonly (string Name, torch.ScalarType Type, int Size, int Rank)[] SafetensorsTypes =
    [
        // Rank follows the order of the Rust safetensors Dtype enum, which sorts tensors in the data area (largest first).
        ("BOOL", torch.ScalarType.Bool, 1, 0),
        ("U8", torch.ScalarType.Byte, 1, 1),
        ("I8", torch.ScalarType.Int8, 1, 2),
        ("I16", torch.ScalarType.Int16, 2, 5),
        ("F16", torch.ScalarType.Float16, 2, 7),
        ("BF16", torch.ScalarType.BFloat16, 2, 8),
        ("I32", torch.ScalarType.Int32, 4, 9),
        ("F32", torch.ScalarType.Float32, 4, 11),
        ("F64", torch.ScalarType.Float64, 8, 12),
        ("I64", torch.ScalarType.Int64, 8, 13),
    ];

    private static readonly Dictionary<string, torch.ScalarType> TorchStorageTypes = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = torch.ScalarType.Float32,
        ["DoubleStorage"] = torch.ScalarType.Float64,
        ["HalfStorage"] = torch.ScalarType.Float16,
        ["BFloat16Storage"] = torch.ScalarType.BFloat16,
        ["LongStorage"] = torch.ScalarType.Int64,
        ["IntStorage"] = torch.ScalarType.Int32,
        ["ShortStorage"] = torch.ScalarType.Int16,
        ["CharStorage"] = torch.ScalarType.Int8,
        ["ByteStorage"] = torch.ScalarType.Byte,
        ["BoolStorage"] = torch.ScalarType.Bool,
    };

    /// <summary>The safetensors dtype name (e.g. <c>BF16</c>) or null when the name is unknown.</summary>
    public static torch.ScalarType? FromSafetensorsName(string name)
    {
        foreach (var entry in SafetensorsTypes)
        {
            if (entry.Name == name)
            {
                return entry.Type;
            }
        }
        return null;
    }

    public static string ToSafetensorsName(torch.ScalarType type)
    {
        foreach (var entry in SafetensorsTypes)
        {
            if (entry.Type == type)
            {
                return entry.Name;
            }
        }
        throw new NotSupportedException($"Tensor element type {type} has no safetensors name; convert it to float32, float16 or bfloat16 first.");
    }

    /// <summary>Position in the Rust safetensors dtype order; tensors with a higher rank come first in a written file.</summary>
    public static int SafetensorsRank(torch.ScalarType type)
    {
        foreach (var entry in SafetensorsTypes)
        {
            if (entry.Type == type)
            {
                return entry.Rank;
            }
        }
        throw new NotSupportedException($"Tensor element type {type} has no safetensors name.");
    }

    public static int ElementSize(torch.ScalarType type) => type switch
    {
        torch.ScalarType.Bool or torch.ScalarType.Byte or torch.ScalarType.Int8 => 1,
        torch.ScalarType.Int16 or torch.ScalarType.Float16 or torch.ScalarType.BFloat16 => 2,
        torch.ScalarType.Int32 or torch.ScalarType.Float32 => 4,
        torch.ScalarType.Int64 or torch.ScalarType.Float64 => 8,
        _ => throw new NotSupportedException($"Tensor element type {type} is not supported by the weights reader."),
    };

    /// <summary>The element type of a <c>torch.XxxStorage</c> class name, or null when it is not a plain storage type.</summary>
    public static torch.ScalarType? FromTorchStorageName(string name) =>
        TorchStorageTypes.TryGetValue(name, out var type) ? type : null;

    public static bool IsTorchStorageName(string name) => TorchStorageTypes.ContainsKey(name);

    /// <summary>Number of elements of <paramref name="shape"/>; throws on negative sizes or overflow.</summary>
    public static long NumberOfElements(long[] shape)
    {
        long count = 1;
        foreach (var size in shape)
        {
            if (size < 0)
            {
                throw new InvalidDataException($"negative dimension in shape [{string.Join(", ", shape)}]");
            }
            count = checked(count * size);
        }
        return count;
    }

    public static string FormatShape(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";
}
