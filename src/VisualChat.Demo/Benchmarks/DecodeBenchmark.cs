using System.Diagnostics;
using TorchSharp;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks;

/// <param name="Variant">What was measured, e.g. "fp32" or "bf16 weights + bf16 compute".</param>
/// <param name="PrefillMs">Prefill of the prompt plus sampling the first token.</param>
/// <param name="TokensPerSecond">Batch-1 decode rate after the first token (KV cache on).</param>
/// <param name="BytesPerToken">Weight bytes read per decoded token: every parameter once, one embedding row for the lookup.</param>
/// <param name="BoundTokensPerSecond">Copy bandwidth ÷ <paramref name="BytesPerToken"/>: the memory-bandwidth ceiling.</param>
public sealed record DecodeBenchmarkRow(string Variant, ScalarType DType, int PromptTokens, int DecodedTokens, double PrefillMs,
    double TokensPerSecond, long BytesPerToken, double BoundTokensPerSecond)
{
    public double RatioToBound => TokensPerSecond / BoundTokensPerSecond;
}

/// <summary>
/// Batch-1 greedy decoding speed of a randomly initialised LLaMA against the memory-bandwidth bound measured in the
/// same run: decoding one token reads every weight once, so tokens/s can never exceed bandwidth ÷ weight bytes.
/// </summary>
public static class DecodeBenchmark
{
    /// <summary>
    /// Weight bytes one decode step reads: all parameters, except that the input embedding is a one-row lookup; a tied
    /// matrix is read in full once, as the output head.
    /// </summary>
    public static long WeightBytesPerToken(LlamaConfig config, ScalarType dtype)
    {
        long elementSize = LlamaConfig.BytesPerElement(DevicePolicy.DTypeName(dtype));
        long embedding = (long)config.VocabSize * config.HiddenSize;
        long elements = config.TieWordEmbeddings
            ? config.ParameterCount() + config.HiddenSize          // the tied matrix is counted once (as lm_head) + the looked-up row
            : config.ParameterCount() - embedding + config.HiddenSize;
        return elements * elementSize;
    }

    /// <param name="bandwidthBytesPerSecond">From <see cref="Roofline.CopyBandwidth"/>, measured by the caller in the same run.</param>
    public static IEnumerable<DecodeBenchmarkRow> Run(LlamaConfig config, IEnumerable<ScalarType> dtypes, double bandwidthBytesPerSecond,
        int newTokens = 64, int promptTokens = 16, long seed = 0)
    {
        if (newTokens < 2) throw new ArgumentOutOfRangeException(nameof(newTokens), newTokens, "Decode at least 2 tokens so a rate after the first can be measured.");
        using var model = new LlamaForCausalLM(config, seed);
        model.eval();
        var prompt = Enumerable.Range(0, promptTokens).Select(i => 3 + (i * 7919) % (config.VocabSize - 3)).ToArray();
        foreach (var dtype in dtypes) {
            model.to(dtype);
            // Warm-up: first calls allocate and pick kernels.
            Measure(model, prompt, Math.Min(4, newTokens));
            var (prefillMs, rate) = Measure(model, prompt, newTokens);
            long bytes = WeightBytesPerToken(config, dtype);
            string variant = dtype == ScalarType.Float32 ? "fp32 weights + fp32 compute" : $"{DevicePolicy.DTypeName(dtype)} weights + {DevicePolicy.DTypeName(dtype)} compute";
            yield return new DecodeBenchmarkRow(variant, dtype, promptTokens, newTokens, prefillMs, rate, bytes, bandwidthBytesPerSecond / bytes);
        }
    }

    static (double PrefillMs, double TokensPerSecond) Measure(LlamaForCausalLM model, int[] prompt, int newTokens)
    {
        var options = new GenerationOptions { MaxNewTokens = newTokens, StopTokenIds = Array.Empty<int>() };
        var clock = Stopwatch.StartNew();
        double first = 0, last = 0;
        int count = 0;
        TextGenerator.Generate(model, prompt, options, onToken: _ => {
            double now = clock.Elapsed.TotalSeconds;
            if (count++ == 0) first = now;
            last = now;
        });
        return (first * 1000, (count - 1) / Math.Max(last - first, 1e-9));
    }
}
