using System.Diagnostics;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks;

/// <summary>One preset's encode throughput and how close it comes to the machine's fp32 GEMM rate.</summary>
public sealed record VisionBenchmarkResult(string Preset, int ImageSize, int Tokens, int Width, long Parameters, int Batch,
    double BestBatchSeconds, double MeanBatchSeconds, double FlopsPerImage, double GemmFlopsPerSecond)
{
    public double ImagesPerSecond => Batch / BestBatchSeconds;
    public double AchievedFlopsPerSecond => FlopsPerImage * ImagesPerSecond;
    /// <summary>Achieved matmul FLOP/s over the n×n GEMM rate measured in the same run (the roofline for a compute-bound encoder).</summary>
    public double Utilisation => AchievedFlopsPerSecond / GemmFlopsPerSecond;
}

/// <summary>
/// Images/s of <see cref="IVisionEncoder.Encode"/> (fp32, no grad, random weights built in memory) for vision presets,
/// against the fp32 GEMM roofline measured in the same run.
/// </summary>
public static class VisionBenchmark
{
    /// <summary>Presets whose encode is about 20× heavier than CLIP ViT-L/14 at 224 px or more.</summary>
    public static bool IsHeavy(string preset) => VisionPresets.Info(preset).Family == VisionEncoderFamily.Qwen
                                                 && VisionPresets.Info(preset).Parameters > 1_000_000_000;

    public static VisionBenchmarkResult Run(string preset, int batch = 4, int repeats = 3, double? gemmFlopsPerSecond = null, int seed = 0)
    {
        if (batch < 1) throw new ArgumentOutOfRangeException(nameof(batch), batch, "--batch must be at least 1.");
        if (repeats < 1) throw new ArgumentOutOfRangeException(nameof(repeats), repeats, "--repeat must be at least 1.");
        var info = VisionPresets.Info(preset);
        double gemm = gemmFlopsPerSecond ?? Roofline.GemmThroughput();
        var encoder = VisionPresets.Create(preset, seed);
        try
        {
            using var pixels = randn(batch, 3, info.Output.ImageSize, info.Output.ImageSize);
            encoder.Encode(pixels).Dispose(); // warm-up: first-touch allocations and oneDNN kernel selection
            double best = double.MaxValue, total = 0;
            for (var r = 0; r < repeats; r++)
            {
                var watch = Stopwatch.StartNew();
                using (var features = encoder.Encode(pixels))
                {
                    watch.Stop();
                    if (features.shape[1] != info.Output.OutputTokens || features.shape[2] != info.Output.OutputWidth)
                        throw new InvalidOperationException($"Preset '{preset}' produced [{string.Join(", ", features.shape)}], not [N, {info.Output.OutputTokens}, {info.Output.OutputWidth}].");
                }
                best = Math.Min(best, watch.Elapsed.TotalSeconds);
                total += watch.Elapsed.TotalSeconds;
            }
            return new VisionBenchmarkResult(info.Name, info.Output.ImageSize, info.Output.OutputTokens, info.Output.OutputWidth,
                info.Parameters, batch, best, total / repeats, FlopsPerImage(info), gemm);
        }
        finally
        {
            ((IDisposable)encoder).Dispose();
        }
    }

    /// <summary>
    /// Matmul FLOPs (2 per multiply-add) of one image through the encoder; LayerNorm, softmax, GELU and adds are left
    /// out (they are O(tokens·width), under 1 % here). Every linear layer of width in→out applied to n tokens costs
    /// 2·n·in·out — so the weight part is ≈ 2 · params · tokens — and self-attention over L tokens of width D adds
    /// QKᵀ plus PV = 2·(2·L²·D) = 4·L²·D per layer. The patchify conv is a linear of 3·p² → D per patch.
    /// Qwen's resampler: kv_proj and the k/v projections run on the patch tokens, q/out on the queries, and the
    /// cross-attention costs 4·Q·L·D.
    /// </summary>
    public static double FlopsPerImage(VisionPresetInfo info)
    {
        switch (info.Config)
        {
            case ClipVisionConfig clip:
            {
                double tokens = clip.NumPositions, d = clip.HiddenSize, inner = clip.IntermediateSize;
                double patchify = 2.0 * clip.NumPatches * clip.NumChannels * clip.PatchSize * clip.PatchSize * d;
                double perLayer = 2.0 * tokens * (4 * d * d + 2 * d * inner) + 4.0 * tokens * tokens * d;
                return patchify + clip.NumHiddenLayers * perLayer;
            }
            case QwenVisionConfig qwen:
            {
                double patches = qwen.NumPatches, w = qwen.Width, m = qwen.MlpSize, o = qwen.OutputDim, q = qwen.NQueries;
                double patchify = 2.0 * patches * 3 * qwen.PatchSize * qwen.PatchSize * w;
                double perLayer = 2.0 * patches * (4 * w * w + 2 * w * m) + 4.0 * patches * patches * w;
                double resampler = (qwen.Width != qwen.OutputDim ? 2.0 * patches * w * o : 0)
                                   + 2.0 * q * o * o          // q projection
                                   + 2.0 * 2 * patches * o * o // k and v projections
                                   + 4.0 * q * patches * o    // QKᵀ and PV
                                   + 2.0 * q * o * o;         // out_proj
                double outputProjection = qwen.UseOutputProjection ? 2.0 * q * o * o : 0;
                return patchify + qwen.Layers * perLayer + resampler + outputProjection;
            }
            default:
                throw new ArgumentException($"Unknown vision config type {info.Config.GetType().Name}.", nameof(info));
        }
    }
}
