using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Model;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Tests.Training;

/// <summary>A tiny LLaMA LM, synthetic token data and a throwaway run folder for trainer tests.</summary>
public sealed class TrainingTestKit : IDisposable
{
    public string RunDir { get; } = Path.Combine(Path.GetTempPath(), "vchat-train-tests", Guid.NewGuid().ToString("N"));

    public static LlamaConfig TinyConfig() => new() {
        VocabSize = 64, HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4,
        NumKeyValueHeads = 2, MaxPositionEmbeddings = 32, RmsNormEps = 1e-5, PadTokenId = null,
    };

    public static LlamaForCausalLM TinyModel(long seed = 7) => new(TinyConfig(), seed);

    public static List<TokenizedSample> Samples(int count, long seed = 3)
    {
        var random = StableRandom.For(seed, "samples");
        return Enumerable.Range(0, count).Select(i =>
        {
            // Counting sequences (next id = id + 1, wrapping): learnable, so eval loss must fall.
            int first = 1 + random.Next(63);
            var ids = Enumerable.Range(0, random.NextInclusive(5, 12)).Select(t => 1 + (first - 1 + t) % 63).ToArray();
            return TextLmData.Sample(ids, "synthetic.jsonl", i.ToString());
        }).ToList();
    }

    public static TextLmData Data(int trainCount = 12, int evalCount = 4, int batchSize = 2) =>
        new(Samples(trainCount), Samples(evalCount, seed: 99), batchSize, 4, 1234, new Collator(0, 8));

    public TrainingConfig Config(Action<TrainingConfig>? edit = null)
    {
        var config = new TrainingConfig {
            OutputDir = RunDir, Precision = "fp32", LearningRate = 1e-2, NumTrainEpochs = 2, LrSchedulerType = "cosine",
            NumWarmupSteps = 2, SaveEveryEpochs = 1, Seed = 1234, AdamBeta1 = 0.9,
        };
        edit?.Invoke(config);
        config.Validate();
        return config;
    }

    public static Dictionary<string, Tensor> Snapshot(nn.Module module) =>
        module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

    public static bool BitIdentical(Tensor a, Tensor b) => a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public void Dispose()
    {
        if (Directory.Exists(RunDir)) Directory.Delete(RunDir, recursive: true);
    }
}
