using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace VisualChat.Weights;

/// <summary>Raw access to a CPU tensor's storage for kernels that read or write it in place (no copy).</summary>
internal static unsafe class TensorMemory
{
    /// <summary>The address of <paramref name="tensor"/>'s first element; valid while the tensor lives and is not
    /// resized. The tensor must be a contiguous CPU tensor.</summary>
    public static void* Pointer(Tensor tensor)
    {
        if (tensor.NumberOfElements * tensor.ElementSize <= int.MaxValue)
            return Unsafe.AsPointer(ref MemoryMarshal.GetReference(tensor.bytes));
        // Tensor.bytes is a Span, limited to 2 GiB (e.g. the fp32 head of a 150k vocabulary): address the first element
        // through a one-element view of the same storage instead.
        using var flat = tensor.view(-1);
        using var first = flat.narrow(0, 0, 1);
        return Unsafe.AsPointer(ref MemoryMarshal.GetReference(first.bytes));
    }

    /// <summary>True for a contiguous CPU tensor, whose elements <see cref="Pointer"/> can address.</summary>
    public static bool IsAddressable(Tensor tensor) => tensor.device_type == TorchSharp.DeviceType.CPU && tensor.is_contiguous();

    /// <summary>Hands the C allocator's free pages back to the kernel (glibc's <c>malloc_trim</c>; nothing elsewhere):
    /// libtorch frees CPU tensors into the allocator, which otherwise keeps them resident.</summary>
    public static void ReturnFreePages()
    {
        if (OperatingSystem.IsLinux()) MallocTrim(0);
    }

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);
}
