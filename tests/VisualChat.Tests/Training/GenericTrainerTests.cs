using TorchSharp;
using VisualChat.Data;
using VisualChat.Model;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Tests.Training;

/// <summary>The trainer over a non-LLaMA model and batch type: LoRA adapters on a small regression network.</summary>
public class GenericTrainerTests
{
    sealed class Regressor : nn.Module<Tensor, Tensor>
    {
        public nn.Module<Tensor, Tensor> hidden;
        public nn.Module<Tensor, Tensor> output;
        /// <summary>Initial weights from a generator of its own: the process-wide one is shared with tests running in
        /// parallel, which made the starting point (and whether 16 steps lower the eval loss) vary between runs.</summary>
        public Regressor(ulong seed) : base(nameof(Regressor))
        {
            hidden = nn.Linear(4, 16);
            output = nn.Linear(16, 1);
            RegisterComponents();
            using var generator = new Generator(seed);
            using var noGrad = no_grad();
            foreach (var (name, parameter) in named_parameters()) {
                double bound = 1 / Math.Sqrt(name.StartsWith("hidden", StringComparison.Ordinal) ? 4 : 16);   // nn.Linear's U(−1/√in, 1/√in)
                parameter.copy_(rand(parameter.shape, generator: generator).mul_(2 * bound).sub_(bound));
            }
        }
        public override Tensor forward(Tensor x) => output.forward(nn.functional.tanh(hidden.forward(x)));
    }

    sealed class PairBatch(Tensor x, Tensor y, int index) : IDisposable
    {
        public Tensor X { get; } = x;
        public Tensor Y { get; } = y;
        public int Index { get; } = index;
        public void Dispose() { X.Dispose(); Y.Dispose(); }
    }

    sealed class RegressorTrainable(Regressor model) : ITrainable<PairBatch>
    {
        public nn.Module Module => model;
        public bool IsDeclaredTrainable(string name) => false;
        public bool IsPretrained(string name) => true;
        public LossResult ComputeLoss(PairBatch batch) => new(nn.functional.mse_loss(model.forward(batch.X), batch.Y), batch.X.shape[0], 0);
        public IReadOnlyList<string> SampleIds(PairBatch batch) => [$"pair#{batch.Index}"];
    }

    sealed class PairData : ITrainingData<PairBatch>
    {
        public bool HasEval => true;
        public int BatchesPerEpoch(int epoch) => 8;
        static PairBatch Make(int index)
        {
            var generator = new Generator((ulong)(index + 1));
            var x = randn([4, 4], generator: generator);
            var y = x.sum(1, keepdim: true).sin();
            return new PairBatch(x, y, index);
        }
        public IEnumerable<PairBatch> TrainBatches(int epoch, int skip, CancellationToken cancellationToken)
        {
            var order = Enumerable.Range(0, 8).ToArray();
            StableRandom.For(5, "pairs", epoch).Shuffle(order);
            foreach (var i in order.Skip(skip)) yield return Make(i);
        }
        public IEnumerable<PairBatch> EvalBatches(CancellationToken cancellationToken) => Enumerable.Range(100, 2).Select(Make);
    }

    [Fact]
    public void OnlyLoraTensorsTrainAndTheyAreCheckpointed()
    {
        using var kit = new TrainingTestKit();
        var model = new Regressor(seed: 11);
        LoraInjector.Inject(model, ["hidden"], rank: 2, alpha: 2, seed: 3);
        var before = TrainingTestKit.Snapshot(model);
        var config = kit.Config(c => { c.LoraDim = 2; c.LoraModuleName = ["hidden"]; c.OnlyOptimizeLora = true; c.NumTrainEpochs = 2; c.LearningRate = 0.05; });
        using var trainer = new Trainer<PairBatch>(new RegressorTrainable(model), new PairData(), config);
        Assert.Equal(["hidden.lora_A", "hidden.lora_B"], trainer.TrainableNames);
        var summary = trainer.Run();
        Assert.Equal(16, summary.Steps);
        foreach (var (name, after) in model.state_dict())
        {
            bool same = TrainingTestKit.BitIdentical(before[name], after);
            Assert.True(name.Contains("lora") ? !same : same, $"{name}: changed = {!same}");
        }
        var evals = trainer.Metrics.History.Where(m => m.Kind == "eval").Select(m => m.EvalLoss!.Value).ToList();
        Assert.True(evals[^1] < evals[0], $"eval loss {evals[0]} -> {evals[^1]}");
        using var saved = VisualChat.Weights.TensorFiles.Open(Path.Combine(kit.RunDir, "final", CheckpointStore.WeightsFile));
        Assert.Equal(["hidden.lora_A", "hidden.lora_B"], saved.Entries.Select(e => e.Name).OrderBy(n => n));
        using var optimizerState = VisualChat.Weights.TensorFiles.Open(Path.Combine(kit.RunDir, "final", CheckpointStore.OptimizerFile));
        Assert.Contains("state.hidden.lora_B.exp_avg_sq", optimizerState.Entries.Select(e => e.Name));
    }

    [Fact]
    public void Bf16StoresFrozenWeightsInHalfAndKeepsFp32Masters()
    {
        using var kit = new TrainingTestKit();
        using var model = TrainingTestKit.TinyModel();
        var frozenBefore = model.model.layers[0].mlp.up_proj.Weight().to(ScalarType.BFloat16).clone();
        using var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), TrainingTestKit.Data(),
            kit.Config(c => { c.Precision = "bf16"; c.MaxSteps = 2; c.EvalEverySteps = 1; }));
        var summary = trainer.Run();
        Assert.Equal(2, summary.Steps);
        Assert.Equal(ScalarType.BFloat16, model.model.layers[0].mlp.up_proj.Weight().dtype);
        Assert.True(TrainingTestKit.BitIdentical(frozenBefore, model.model.layers[0].mlp.up_proj.Weight()));
        var master = trainer.TrainableState().Single().Value;
        Assert.Equal(ScalarType.Float32, master.dtype);
        Assert.True(TrainingTestKit.BitIdentical(master.to(ScalarType.BFloat16), model.model.embed_tokens.weight!));
        Assert.Equal(1 + 2, trainer.Metrics.History.Count(m => m.Kind == "eval")); // before training + every step
        Assert.Equal(1.0, trainer.Scaler.Scale);
    }
}
