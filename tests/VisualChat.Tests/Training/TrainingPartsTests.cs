using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Tests.Training;

public class TrainingPartsTests
{
    [Theory]
    // Values of transformers.get_scheduler(name, opt, num_warmup_steps=2, num_training_steps=10) multipliers.
    [InlineData("linear", 0, 0.0)]
    [InlineData("linear", 1, 0.5)]
    [InlineData("linear", 2, 1.0)]
    [InlineData("linear", 6, 0.5)]
    [InlineData("linear", 10, 0.0)]
    [InlineData("cosine", 1, 0.5)]
    [InlineData("cosine", 2, 1.0)]
    [InlineData("cosine", 4, 0.8535533905932737)]
    [InlineData("cosine", 6, 0.5)]
    [InlineData("cosine", 10, 0.0)]
    [InlineData("constant", 0, 1.0)]
    [InlineData("constant_with_warmup", 1, 0.5)]
    [InlineData("constant_with_warmup", 9, 1.0)]
    public void SchedulesMatchHuggingFace(string type, int step, double expected) =>
        Assert.Equal(expected, new LrSchedule(type, 2, 10).Multiplier(step), 12);

    [Fact]
    public void WarmupRatioRoundsUpLikeHuggingFace()
    {
        var config = new TrainingConfig { WarmupRatio = 0.025 };
        Assert.Equal(3, config.WarmupSteps(100));
        Assert.Equal(0, new TrainingConfig().WarmupSteps(100));
    }

    [Fact]
    public void AdamWMatchesTorchSharpsAdamW()
    {
        using var scope = NewDisposeScope();
        var start = linspace(-1, 1, 12).reshape(3, 4);
        var ours = start.clone();
        var reference = new Parameter(start.clone(), true);
        var optimizer = new VisualChat.Training.AdamW([new AdamWGroup("g", [("w", ours)], 0.01, 0.1)], 0.9, 0.95, 1e-8);
        var torchOptimizer = optim.AdamW([reference], lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1);
        for (int i = 0; i < 5; i++)
        {
            var grad = (start * (i + 1)).sin();
            optimizer.Step(_ => grad);
            torchOptimizer.zero_grad();
            (reference * grad).sum().backward();
            torchOptimizer.step();
        }
        Assert.True(ours.allclose(reference.detach(), rtol: 1e-6, atol: 1e-7), $"max diff {(ours - reference.detach()).abs().max().item<float>()}");
        var state = optimizer.StateTensors().ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.Equal(5, state["state.w.step"].item<long>());
        var restored = new VisualChat.Training.AdamW([new AdamWGroup("g", [("w", ours.clone())], 0.01, 0.1)], 0.9, 0.95, 1e-8);
        restored.LoadState(name => state.GetValueOrDefault(name));
        Assert.True(restored.HasState("w"));
    }

    [Fact]
    public void LossScalerBacksOffAndGrows()
    {
        var scaler = new LossScaler(true, 65536, growthInterval: 3);
        Assert.False(scaler.Update(false));
        Assert.Equal(32768, scaler.Scale);
        Assert.True(scaler.Update(true));
        Assert.True(scaler.Update(true));
        Assert.True(scaler.Update(true));
        Assert.Equal(65536, scaler.Scale);
        Assert.Equal(1, scaler.SkippedSteps);
        Assert.Equal(1.0, new LossScaler(false).Scale);
    }

    sealed class TwoLayers : nn.Module<Tensor, Tensor>
    {
        public nn.Module<Tensor, Tensor> up;
        public nn.Module<Tensor, Tensor> down;
        public TwoLayers() : base(nameof(TwoLayers))
        {
            up = nn.Linear(6, 8);
            down = nn.Linear(8, 3);
            RegisterComponents();
        }
        public override Tensor forward(Tensor x) => down.forward(nn.functional.silu(up.forward(x)));
    }

    [Fact]
    public void LoraInjectionTrainsAdaptersAndMergedForwardEqualsUnmerged()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var module = new TwoLayers();
        var x = randn(4, 6);
        var plain = module.forward(x).detach().clone();
        var wrapped = LoraInjector.Inject(module, ["up"], rank: 2, alpha: 4, seed: 1);
        Assert.Equal(["up"], wrapped);
        Assert.IsType<LoraLinear>(module.up);
        var names = module.named_parameters().Select(p => p.name).ToList();
        Assert.Contains("up.lora_A", names);
        Assert.Contains("up.lora_B", names);
        Assert.Contains("up.base_layer.weight", names);
        // B starts at zero: a fresh adapter changes nothing.
        Assert.True(module.forward(x).allclose(plain, rtol: 0, atol: 0));
        var lora = (LoraLinear)module.up;
        using (no_grad()) lora.lora_B.copy_(randn(8, 2) * 0.5);
        var unmerged = module.forward(x).detach().clone();
        Assert.False(unmerged.allclose(plain));
        Assert.Equal(1, LoraInjector.MergeAll(module));
        Assert.True(module.forward(x).allclose(unmerged, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void LoraOnAFieldTypedLinearIsAClearError()
    {
        using var model = new LinearField();
        var error = Assert.Throws<InvalidOperationException>(() => LoraInjector.Inject(model, ["q_proj"], 2, 2, 1));
        Assert.Contains("q_proj", error.Message);
        Assert.Contains("Module<Tensor, Tensor>", error.Message);
    }

    sealed class LinearField : TorchSharp.torch.nn.Module<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor>
    {
        public readonly TorchSharp.Modules.Linear q_proj = TorchSharp.torch.nn.Linear(4, 4);
        public LinearField() : base(nameof(LinearField)) => RegisterComponents();
        public override TorchSharp.torch.Tensor forward(TorchSharp.torch.Tensor x) => q_proj.forward(x);
    }

    [Fact]
    public void GlobsRegexesAndSubstrings()
    {
        Assert.True(ParameterSelection.MatchesAny("model.layers.1.mlp.up_proj.weight", ["model.layers.1.*"]));
        Assert.False(ParameterSelection.MatchesAny("model.layers.11.mlp.up_proj.weight", ["model.layers.1.?lp*"]));
        Assert.True(ParameterSelection.MatchesAny("model.layers.3.self_attn.q_proj", ["re:layers\\.[0-9]+\\.self_attn\\.q_proj$"]));
        Assert.True(ParameterSelection.MatchesAny("model.layers.3.self_attn.q_proj", ["q_proj"], substring: true));
        Assert.False(ParameterSelection.MatchesAny("model.layers.3.self_attn.q_proj", ["q_proj"]));
    }
}
