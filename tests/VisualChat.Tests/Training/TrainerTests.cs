using System.Text.Json.Nodes;
using TorchSharp.Modules;
using VisualChat.Data;
using VisualChat.Model;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Tests.Training;

public class TrainerTests
{
    [Fact]
    public void DefaultModeChangesOnlyTheDeclaredTrainableTensors()
    {
        using var kit = new TrainingTestKit();
        using var model = TrainingTestKit.TinyModel();
        var before = TrainingTestKit.Snapshot(model);
        using var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), TrainingTestKit.Data(), kit.Config(c => c.MaxSteps = 3));
        Assert.Equal([LlamaLmTrainable.EmbeddingParameter], trainer.TrainableNames);
        var summary = trainer.Run();
        Assert.Equal(3, summary.Steps);
        foreach (var (name, after) in model.state_dict())
        {
            bool same = TrainingTestKit.BitIdentical(before[name], after);
            Assert.True(name == LlamaLmTrainable.EmbeddingParameter ? !same : same, $"{name}: changed = {!same}");
        }
        Assert.False(model.model.layers[0].self_attn.q_proj.Weight().requires_grad);
    }

    [Fact]
    public void TrainingLowersTheLossAndWritesCheckpointsMetricsAndCurve()
    {
        using var kit = new TrainingTestKit();
        using var model = TrainingTestKit.TinyModel();
        using var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), TrainingTestKit.Data(), kit.Config(c => c.Unfreeze = ["*"]));
        var summary = trainer.Run();
        Assert.Equal(12, summary.Steps);
        var evals = trainer.Metrics.History.Where(m => m.Kind == "eval").Select(m => m.EvalLoss!.Value).ToList();
        Assert.Equal(3, evals.Count); // before training and after each epoch
        Assert.True(evals[^1] < evals[0], $"eval loss {evals[0]} -> {evals[^1]}");
        foreach (var name in new[] { "epoch-1", "epoch-2", "best", "final" })
            Assert.NotNull(CheckpointStore.TryRead(Path.Combine(kit.RunDir, name)));
        // best/ holds the weights of the epoch whose eval loss was lowest (evals after epochs 1 and 2 are at steps 6, 12).
        var epochEvals = trainer.Metrics.History.Where(m => m.Kind == "eval" && m.Step > 0).ToList();
        var bestEval = epochEvals.MinBy(m => m.EvalLoss!.Value)!;
        var worstEval = epochEvals.MaxBy(m => m.EvalLoss!.Value)!;
        Assert.NotEqual(bestEval.Step, worstEval.Step);
        Assert.Equal(bestEval.EvalLoss, summary.BestEvalLoss);
        Assert.Equal(bestEval.Step, CheckpointStore.TryRead(Path.Combine(kit.RunDir, "best"))!.Step);
        string bestEpoch = $"epoch-{epochEvals.IndexOf(bestEval) + 1}", otherEpoch = $"epoch-{epochEvals.IndexOf(worstEval) + 1}";
        using (var best = VisualChat.Weights.TensorFiles.Open(Path.Combine(kit.RunDir, "best", CheckpointStore.WeightsFile)))
        using (var atBestEpoch = VisualChat.Weights.TensorFiles.Open(Path.Combine(kit.RunDir, bestEpoch, CheckpointStore.WeightsFile)))
        using (var atOtherEpoch = VisualChat.Weights.TensorFiles.Open(Path.Combine(kit.RunDir, otherEpoch, CheckpointStore.WeightsFile)))
        {
            Assert.NotEmpty(best.Entries);
            foreach (var entry in best.Entries)
            {
                Assert.True(TrainingTestKit.BitIdentical(best.Read(entry.Name), atBestEpoch.Read(entry.Name)), $"best/{entry.Name} is not {bestEpoch}'s");
            }
            Assert.Contains(best.Entries, e => !TrainingTestKit.BitIdentical(best.Read(e.Name), atOtherEpoch.Read(e.Name)));
        }
        Assert.True(File.Exists(Path.Combine(kit.RunDir, "loss.png")));
        var lines = File.ReadAllLines(Path.Combine(kit.RunDir, "metrics.jsonl"));
        Assert.Equal(12 + 3, lines.Length);
        Assert.Contains("\"grad_norm\"", lines[1]);
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(kit.RunDir, "final", CheckpointStore.ManifestFile)))!;
        Assert.Equal(12, manifest["step"]!.GetValue<long>());
    }

    [Fact]
    public void NoDecayGroupsHoldNormsAndVectorsOnly()
    {
        using var kit = new TrainingTestKit();
        using var model = TrainingTestKit.TinyModel();
        using var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), TrainingTestKit.Data(),
            kit.Config(c => { c.Unfreeze = ["*"]; c.WeightDecay = 0.1; }));
        var noDecay = trainer.ParameterGroups.Single(g => g.Name == "pretrained_no_decay");
        var decay = trainer.ParameterGroups.Single(g => g.Name == "pretrained_decay");
        Assert.Equal(0.0, noDecay.WeightDecay);
        Assert.Equal(0.1, decay.WeightDecay);
        Assert.All(noDecay.Parameters, p => Assert.Contains("norm", p.Name));
        Assert.All(decay.Parameters, p => Assert.Equal(2, p.Master.dim()));
        Assert.Equal(model.parameters().Count(), noDecay.Parameters.Count + decay.Parameters.Count);
    }

    [Fact]
    public void PretrainedLearningRateAppliesToPretrainedParametersOnly()
    {
        using var kit = new TrainingTestKit();
        using var model = TrainingTestKit.TinyModel();
        var trainable = new LlamaLmTrainable(model, name => name.Contains("lm_head"));
        using var trainer = new Trainer<TrainingBatch>(new PretrainedOnlyEmbeddings(trainable), TrainingTestKit.Data(),
            kit.Config(c => { c.Unfreeze = [LlamaLmTrainable.EmbeddingParameter]; c.PretrainedLearningRate = 1e-5; }));
        Assert.Equal(1e-5, trainer.ParameterGroups.Single(g => g.Name == "pretrained_decay").BaseLearningRate);
        Assert.Equal(1e-2, trainer.ParameterGroups.Single(g => g.Name == "decay").BaseLearningRate);
    }

    sealed class PretrainedOnlyEmbeddings(LlamaLmTrainable inner) : ITrainable<TrainingBatch>
    {
        public nn.Module Module => inner.Module;
        public bool IsDeclaredTrainable(string name) => inner.IsDeclaredTrainable(name);
        public bool IsPretrained(string name) => name == LlamaLmTrainable.EmbeddingParameter;
        public LossResult ComputeLoss(TrainingBatch batch) => inner.ComputeLoss(batch);
        public IReadOnlyList<string> SampleIds(TrainingBatch batch) => inner.SampleIds(batch);
    }

    [Fact]
    public void ResumedRunEndsBitIdenticalToAnUninterruptedOne()
    {
        void Edit(TrainingConfig c) { c.Unfreeze = ["model.layers.1.*", "lm_head.weight"]; c.GradientAccumulationSteps = 2; c.NumTrainEpochs = 2; }
        Dictionary<string, Tensor> straight;
        using (var kit = new TrainingTestKit())
        using (var model = TrainingTestKit.TinyModel())
        using (var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), TrainingTestKit.Data(), kit.Config(Edit)))
        {
            trainer.Run();
            straight = trainer.TrainableState().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        }

        using var resumedKit = new TrainingTestKit();
        using (var model = TrainingTestKit.TinyModel())
        using (var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), TrainingTestKit.Data(), resumedKit.Config(Edit)))
        using (var stop = new CancellationTokenSource())
        {
            trainer.Progress = m => { if (m.Kind == "train" && m.Step == 4) stop.Cancel(); };
            var first = trainer.Run(stop.Token);
            Assert.True(first.Interrupted);
            Assert.Equal(4, first.Steps); // 3 steps per epoch: stopped inside epoch 2
        }
        Assert.Equal(4, CheckpointStore.Latest(resumedKit.RunDir)!.Step);
        using (var model = TrainingTestKit.TinyModel(seed: 999)) // different init: everything trainable comes from the checkpoint
        {
            // Frozen weights must match the first run's base model, so load them from the seed-7 model.
            using (var baseModel = TrainingTestKit.TinyModel())
            using (no_grad())
                foreach (var (name, tensor) in baseModel.state_dict()) model.state_dict()[name].copy_(tensor);
            using var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), TrainingTestKit.Data(), resumedKit.Config(c => { Edit(c); c.Resume = "auto"; }));
            var second = trainer.Run();
            Assert.False(second.Interrupted);
            Assert.Equal(6, second.Steps);
            foreach (var (name, tensor) in trainer.TrainableState())
                Assert.True(TrainingTestKit.BitIdentical(straight[name], tensor), $"{name} differs after resume");
        }
    }

    [Fact]
    public void Fp16LossScalingSkipsAnOverflowingStep()
    {
        using var kit = new TrainingTestKit();
        using var model = TrainingTestKit.TinyModel();
        using var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), TrainingTestKit.Data(),
            kit.Config(c => { c.Precision = "fp16"; c.MaxSteps = 3; c.LrSchedulerType = "constant"; }));
        Assert.Equal(ScalarType.Float16, trainer.StorageDtype);
        Assert.Equal(65536, trainer.Scaler.Scale);
        trainer.AfterBackward = (step, parameters) =>
        {
            if (step == 1) using (no_grad()) parameters[0].Parameter.grad!.fill_(float.PositiveInfinity);
        };
        StepMetrics? overflowStep = null;
        trainer.Progress = m => { if (m.Kind == "train" && m.Step == 2) overflowStep = m; };
        var summary = trainer.Run();
        Assert.NotNull(overflowStep);
        Assert.Equal(1, overflowStep!.Skipped);
        Assert.Equal(32768, overflowStep.LossScale);
        Assert.Equal(1, summary.SkippedSteps);
        Assert.Equal(ScalarType.Float16, model.model.layers[0].mlp.up_proj.Weight().dtype);
    }

    [Fact]
    public void OverflowingStepLeavesTheWeightsUnchanged()
    {
        using var kit = new TrainingTestKit();
        using var model = TrainingTestKit.TinyModel();
        using var trainer = new Trainer<TrainingBatch>(new LlamaLmTrainable(model), TrainingTestKit.Data(),
            kit.Config(c => { c.Precision = "fp16"; c.MaxSteps = 2; c.LrSchedulerType = "constant"; }));
        Dictionary<string, Tensor>? before = null;
        trainer.AfterBackward = (step, parameters) =>
        {
            if (step != 1) return;
            before = trainer.TrainableState().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone().DetachFromDisposeScope());
            using (no_grad()) parameters[0].Parameter.grad!.view(-1)[0] = tensor(float.NaN, ScalarType.Float16);
        };
        trainer.Run();
        foreach (var (name, after) in trainer.TrainableState())
            Assert.True(TrainingTestKit.BitIdentical(before![name], after), $"{name} changed on a skipped step");
        Assert.Equal(32768, trainer.Scaler.Scale);
    }

    [Fact]
    public void NanLossStopsWithTheSampleIdsOrIsSkipped()
    {
        using var kit = new TrainingTestKit();
        using var model = TrainingTestKit.TinyModel();
        var poisoned = new NanOnBatch(new LlamaLmTrainable(model), poisonedCall: 2);
        using (var trainer = new Trainer<TrainingBatch>(poisoned, TrainingTestKit.Data(evalCount: 0), kit.Config()))
        {
            var error = Assert.Throws<TrainingDivergedException>(() => trainer.Run());
            Assert.Contains("step 2", error.Message);
            Assert.Contains("synthetic.jsonl#", error.Message);
        }
        using var skipKit = new TrainingTestKit();
        using var trainer2 = new Trainer<TrainingBatch>(new NanOnBatch(new LlamaLmTrainable(model), poisonedCall: 2), TrainingTestKit.Data(evalCount: 0),
            skipKit.Config(c => c.OnNan = "skip"));
        var summary = trainer2.Run();
        Assert.Equal(1, summary.SkippedBatches);
        Assert.Equal(11, summary.Steps); // the poisoned micro-batch was the whole of its step
    }

    sealed class NanOnBatch(LlamaLmTrainable inner, int poisonedCall) : ITrainable<TrainingBatch>
    {
        int _calls;
        public nn.Module Module => inner.Module;
        public bool IsDeclaredTrainable(string name) => inner.IsDeclaredTrainable(name);
        public bool IsPretrained(string name) => inner.IsPretrained(name);
        public IReadOnlyList<string> SampleIds(TrainingBatch batch) => inner.SampleIds(batch);
        public LossResult ComputeLoss(TrainingBatch batch)
        {
            var result = inner.ComputeLoss(batch);
            return ++_calls == poisonedCall ? result with { Loss = result.Loss * float.NaN } : result;
        }
    }
}
