using System.Diagnostics;
using TorchSharp;
using VisualChat.Data;
using VisualChat.Model;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks;

/// <summary>One training-throughput measurement.</summary>
/// <param name="Mode">all = every parameter trainable; frozen = only the token embeddings (VisualChat's default).</param>
/// <param name="MatmulParameters">N: parameters used in matmuls (all but the input embedding table).</param>
/// <param name="TrainableMatmulParameters">Trainable parameters used in matmuls (their weight gradients cost FLOPs).</param>
/// <param name="FlopsPerToken6N">6·N + attention, the usual all-trainable count.</param>
/// <param name="FlopsPerTokenFrozenAware">2·N (forward) + 2·N (activation gradients, needed to reach the embeddings
/// through the frozen layers) + 2·N_trainable (weight gradients) + attention.</param>
public sealed record TrainBenchRow(
    string Mode, long MatmulParameters, long TrainableMatmulParameters, int Batch, int SequenceLength, double StepSeconds,
    double TokensPerSecond, double FlopsPerToken6N, double FlopsPerTokenFrozenAware, double Mfu6N, double MfuFrozenAware);

/// <summary>
/// Training throughput of a LLaMA LM (random weights, random tokens) through the real <see cref="Trainer{TBatch}"/>
/// (AdamW, clipping, fp32), with MFU against <see cref="Roofline.GemmThroughput"/> measured in the same run.
/// Attention adds 12·layers·hidden·L FLOPs per token (PaLM's count: QKᵀ and AV, forward and both backward
/// products); it has no weights, so it is the same in both counts.
/// </summary>
public static class TrainBenchmark
{
    public static LlamaConfig Preset(string name) => name switch {
        "tiny" => new LlamaConfig { VocabSize = 32000, HiddenSize = 256, IntermediateSize = 688, NumHiddenLayers = 4, NumAttentionHeads = 4, MaxPositionEmbeddings = 2048 },
        "100m" => new LlamaConfig { VocabSize = 32000, HiddenSize = 768, IntermediateSize = 2048, NumHiddenLayers = 12, NumAttentionHeads = 12, MaxPositionEmbeddings = 2048 },
        _ => throw new ArgumentException($"Unknown train benchmark preset '{name}'; use tiny or 100m.", nameof(name)),
    };

    public static (double PeakFlops, IReadOnlyList<TrainBenchRow> Rows) Run(LlamaConfig config, int batch, int sequenceLength, int steps, int warmupSteps,
        IEnumerable<string> modes, string device = "cpu")
    {
        double peak = Roofline.GemmThroughput(1024);
        var rows = new List<TrainBenchRow>();
        foreach (var mode in modes)
            rows.Add(Measure(config, mode, batch, sequenceLength, steps, warmupSteps, device, peak));
        return (peak, rows);
    }

    static TrainBenchRow Measure(LlamaConfig config, string mode, int batch, int sequenceLength, int steps, int warmupSteps, string device, double peak)
    {
        if (mode is not ("all" or "frozen")) throw new ArgumentException($"Unknown train benchmark mode '{mode}'; use all or frozen.", nameof(mode));
        var runDir = Path.Combine(Path.GetTempPath(), $"vchat-bench-train-{Guid.NewGuid():N}");
        try
        {
            int total = steps + warmupSteps;
            var random = StableRandom.For(1, "bench-train");
            var samples = Enumerable.Range(0, total * batch)
                .Select(i => TextLmData.Sample(Enumerable.Range(0, sequenceLength).Select(_ => 1 + random.Next(config.VocabSize - 1)).ToArray(), "random", i.ToString()))
                .ToList();
            var data = new TextLmData(samples, [], batch, batch, 1, new Collator(0, 1));
            var trainingConfig = new TrainingConfig {
                OutputDir = runDir, Precision = "fp32", Device = device, MaxSteps = total, NumTrainEpochs = 1, SaveEveryEpochs = 0, SaveFinal = false,
                LrSchedulerType = "constant", LearningRate = 1e-4, Unfreeze = mode == "all" ? ["*"] : [],
            };
            using var model = new LlamaForCausalLM(config, seed: 1);
            model.to(torch.device(device));
            using var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), data, trainingConfig);
            var clock = new Stopwatch();
            trainer.Progress = m => { if (m.Kind == "train" && m.Step == warmupSteps) clock.Restart(); };
            trainer.Run();
            clock.Stop();
            double stepSeconds = clock.Elapsed.TotalSeconds / steps;
            // Labels shift by one: each sequence trains L-1 tokens, but the forward runs over L.
            double tokensPerSecond = batch * (double)sequenceLength / stepSeconds;

            var named = model.named_parameters().ToList();
            long matmul = named.Where(p => p.name != LlamaLmTrainable.EmbeddingParameter || config.TieWordEmbeddings).Sum(p => p.parameter.numel());
            var trainable = trainer.TrainableNames.ToHashSet();
            long trainableMatmul = named.Where(p => trainable.Contains(p.name) && (p.name != LlamaLmTrainable.EmbeddingParameter || config.TieWordEmbeddings))
                .Sum(p => p.parameter.numel());
            double attention = 12.0 * config.NumHiddenLayers * config.HiddenSize * sequenceLength;
            double sixN = 6.0 * matmul + attention;
            double frozenAware = 4.0 * matmul + 2.0 * trainableMatmul + attention;
            return new TrainBenchRow(mode, matmul, trainableMatmul, batch, sequenceLength, stepSeconds, tokensPerSecond, sixN, frozenAware,
                sixN * tokensPerSecond / peak, frozenAware * tokensPerSecond / peak);
        }
        finally
        {
            if (Directory.Exists(runDir)) Directory.Delete(runDir, recursive: true);
        }
    }
}
