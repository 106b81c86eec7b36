namespace VisualChat.Benchmarks;

/// <summary>
/// Peak resident memory of this process on Linux, resettable: libtorch has no CPU allocator statistics, so the kernel's
/// high-water mark (VmHWM) is the honest measure of the largest allocation burst of a code section.
/// </summary>
public static class PeakMemory
{
    public static bool Supported => File.Exists("/proc/self/status") && File.Exists("/proc/self/clear_refs");

    /// <summary>Resets the high-water mark to the current resident size and returns that size in bytes.</summary>
    public static long Reset()
    {
        if (!Supported) return 0;
        File.WriteAllText("/proc/self/clear_refs", "5");
        return Read("VmRSS:");
    }

    /// <summary>Returns the C allocator's free pages to the kernel, so that a <see cref="Reset"/> after it starts from
    /// what is in use rather than from what the allocator kept.</summary>
    public static void ReturnFreeMemory() => VisualChat.Weights.TensorMemory.ReturnFreePages();

    /// <summary>The high-water mark in bytes since the last <see cref="Reset"/>.</summary>
    public static long HighWaterMark() => Supported ? Read("VmHWM:") : 0;

    static long Read(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line[field.Length..].Trim().Split(' ')[0]) * 1024;
        }

        return 0;
    }
}
