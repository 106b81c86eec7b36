using System.Runtime.InteropServices;
using TorchSharp;

namespace VisualChat.Benchmarks;

/// <summary>What a benchmark ran on, printed with every table so numbers are comparable.</summary>
public sealed record MachineInfo(string Cpu, int LogicalCores, int TorchThreads, string Flags, string Os, string Runtime, string TorchSharp)
{
    public static MachineInfo Current()
    {
        string cpu = "unknown", flags = "";
        const string cpuInfo = "/proc/cpuinfo";
        if (File.Exists(cpuInfo))
        {
            foreach (var line in File.ReadLines(cpuInfo))
            {
                if (cpu == "unknown" && line.StartsWith("model name", StringComparison.Ordinal))
                {
                    cpu = line[(line.IndexOf(':') + 1)..].Trim();
                }
                else if (flags.Length == 0 && line.StartsWith("flags", StringComparison.Ordinal))
                {
                    var all = line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
                    string[] interesting = ["avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"];
                    flags = string.Join(' ', interesting.Where(all.Contains));
                }
            }
        }
        return new MachineInfo(cpu, Environment.ProcessorCount, torch.get_num_threads(), flags,
            RuntimeInformation.OSDescription, RuntimeInformation.FrameworkDescription,
            typeof(torch).Assembly.GetName().Version?.ToString() ?? "?");
    }

    public override string ToString() =>
        $"{Cpu}; {LogicalCores} logical cores, torch threads {TorchThreads}; flags: {(Flags.Length == 0 ? "-" : Flags)}; {Os}; {Runtime}; TorchSharp {TorchSharp}";
}
