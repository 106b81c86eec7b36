using Microsoft.Win32.SafeHandles;
using TorchSharp;

namespace VisualChat.Weights;

/// <summary>Moves raw bytes between files and the storage of CPU tensors without intermediate managed buffers.</summary>
internal static class TensorBytes
{
    /// <summary>Largest slice handed out as one span (spans are int-indexed; tensors can be larger).</summary>
    private const long MaxChunkBytes = 1L << 30;

    public delegate void ChunkAction(Span<byte> chunk);

    /// <summary>Calls <paramref name="action"/> on consecutive byte spans covering a contiguous CPU tensor's data.</summary>
    public static void ForEachChunk(torch.Tensor tensor, ChunkAction action)
    {
        if (tensor.device_type != DeviceType.CPU || !tensor.is_contiguous())
        {
            throw new ArgumentException("Raw byte access needs a contiguous CPU tensor.", nameof(tensor));
        }
        long elementSize = DTypes.ElementSize(tensor.dtype);
        long totalBytes = tensor.numel() * elementSize;
        if (totalBytes == 0)
        {
            return;
        }
        if (totalBytes <= MaxChunkBytes)
        {
            action(tensor.bytes);
            return;
        }
        using var flat = tensor.view(-1);
        long elementsPerChunk = MaxChunkBytes / elementSize;
        for (long start = 0; start < flat.numel(); start += elementsPerChunk)
        {
            using var piece = flat.narrow(0, start, Math.Min(elementsPerChunk, flat.numel() - start));
            action(piece.bytes);
        }
    }

    /// <summary>Fills a freshly allocated contiguous CPU tensor from <paramref name="fileOffset"/> of an open file.</summary>
    public static void Fill(torch.Tensor destination, SafeFileHandle file, long fileOffset, string filePath, string tensorName)
    {
        long position = fileOffset;
        ForEachChunk(destination, chunk =>
        {
            while (!chunk.IsEmpty)
            {
                int read = RandomAccess.Read(file, chunk, position);
                if (read <= 0)
                {
                    throw new InvalidDataException(
                        $"'{filePath}' ends before the data of tensor '{tensorName}' (at byte {position}); the file is truncated — download it again.");
                }
                position += read;
                chunk = chunk[read..];
            }
        });
    }

    /// <summary>Allocates a tensor with the stored type and shape, fills it from the file, then converts it as asked.</summary>
    public static torch.Tensor ReadContiguous(SafeFileHandle file, long fileOffset, torch.ScalarType storedType, long[] shape,
        string filePath, string tensorName, torch.ScalarType? dtype, torch.Device? device)
    {
        var loaded = torch.empty(shape, storedType);
        try
        {
            Fill(loaded, file, fileOffset, filePath, tensorName);
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
        return Convert(loaded, dtype, device);
    }

    /// <summary>Returns <paramref name="tensor"/> converted as asked, disposing the original when a new tensor was made.</summary>
    public static torch.Tensor Convert(torch.Tensor tensor, torch.ScalarType? dtype, torch.Device? device)
    {
        var targetType = dtype ?? tensor.dtype;
        bool sameDevice = device is null || (device.type == tensor.device_type && (device.type == DeviceType.CPU || device.index == tensor.device_index));
        if (targetType == tensor.dtype && sameDevice)
        {
            return tensor;
        }
        var converted = tensor.to(targetType, device ?? tensor.device);
        if (!ReferenceEquals(converted, tensor))
        {
            tensor.Dispose();
        }
        return converted;
    }
}
