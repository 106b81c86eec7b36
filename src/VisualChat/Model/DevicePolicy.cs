using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>Which dtype to compute in on a device.</summary>
public static class DevicePolicy
{
    /// <summary>Environment variable that fixes libtorch's intra-op thread count (overrides <see cref="ConfigureCpuThreads"/>).</summary>
    public const string ThreadsVariable = "VISUALCHAT_THREADS";

    /// <summary>Models below this many parameters run their CPU ops on one thread.</summary>
    public const long SmallModelParameters = 20_000_000;

    /// <summary>
    /// Picks libtorch's intra-op threads for a model about to run on the CPU: a small model's ops are too short to
    /// split, and waking a second thread for each costs more than it saves — measured here, a 0.1M-parameter chat model
    /// decoded 640 tokens/s on one thread and 12–20 tokens/s on two while another process used a core. Larger models keep
    /// all cores. <see cref="ThreadsVariable"/> overrides the choice. Returns the thread count in effect.
    /// </summary>
    public static int ConfigureCpuThreads(long parameterCount)
    {
        if (int.TryParse(Environment.GetEnvironmentVariable(ThreadsVariable), out int fixedThreads) && fixedThreads > 0)
            torch.set_num_threads(fixedThreads);
        else if (parameterCount < SmallModelParameters)
            torch.set_num_threads(1);
        return torch.get_num_threads();
    }

    /// <summary>
    /// Half-precision matmuls are far slower than fp32 on CPUs, so CPU computes in fp32 unless <paramref name="force"/>;
    /// CUDA computes in what was requested.
    /// </summary>
    public static ScalarType ComputeDType(Device device, ScalarType requested, bool force = false)
    {
        if (requested is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64))
            throw new ArgumentException($"Compute dtype {requested} is not a floating-point type; use Float32, BFloat16 or Float16.", nameof(requested));
        if (force || device.type == DeviceType.CUDA) return requested;
        return ScalarType.Float32;
    }

    /// <summary>Parses "float32"/"fp32"/"f32", "bfloat16"/"bf16", "float16"/"fp16"/"f16" (config.json and CLI spellings).</summary>
    public static ScalarType ParseDType(string name) => name.ToLowerInvariant() switch {
        "float32" or "fp32" or "f32" or "float" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        "float16" or "fp16" or "f16" or "half" => ScalarType.Float16,
        "float64" or "fp64" or "f64" or "double" => ScalarType.Float64,
        _ => throw new ArgumentException($"Unknown dtype '{name}'; use float32, bfloat16 or float16.", nameof(name))
    };

    /// <summary>The config.json spelling of a dtype: "float32", "bfloat16", "float16", "float64".</summary>
    public static string DTypeName(ScalarType dtype) => dtype switch {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        ScalarType.Float64 => "float64",
        _ => throw new ArgumentException($"dtype {dtype} is not a floating-point weight type; use Float32, BFloat16 or Float16.", nameof(dtype))
    };
}
