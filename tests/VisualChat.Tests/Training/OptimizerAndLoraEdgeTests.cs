using VisualChat.Model;
using VisualChat.Tests.Model;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Tests.Training;

/// <summary>The edges of AdamW and the LoRA layers that a scoped mutation run found untested (docs/mutation-testing.md).</summary>
public class OptimizerAndLoraEdgeTests
{
    static AdamW Optimizer(params (string Name, Tensor Master)[] parameters) =>
        new([new AdamWGroup("decay", parameters, learningRate: 0.1, weightDecay: 0.0)], 0.9, 0.999, 1e-8);

    [Fact]
    public void AdamWRefusesAParameterInTwoGroups()
    {
        using var w = zeros(2);
        var groups = new[] { new AdamWGroup("a", [("w", w)], 0.1, 0.0), new AdamWGroup("b", [("w", w)], 0.1, 0.0) };
        var error = Assert.Throws<ArgumentException>(() => new AdamW(groups, 0.9, 0.999, 1e-8));
        Assert.Contains("'w'", error.Message);
    }

    [Fact]
    public void AdamWLeavesAParameterWithoutAGradientAloneAndKeepsNoStateForIt()
    {
        using var a = ones(3);
        using var b = ones(3);
        using var optimizer = Optimizer(("a", a), ("b", b));
        using var grad = full(3, 0.5f);
        optimizer.Step(name => name == "a" ? grad : null);
        Assert.True(a.lt(1).all().item<bool>(), "a has a gradient and moves");
        Assert.Equal(new float[] { 1, 1, 1 }, b.data<float>().ToArray());
        Assert.Equal(["state.a.exp_avg", "state.a.exp_avg_sq", "state.a.step"], optimizer.StateTensors().Select(kv => kv.Key));
    }

    [Fact]
    public void AdamWStateIsListedInOrdinalNameOrder()
    {
        using var z = ones(1);
        using var a = ones(1);
        using var B = ones(1);
        using var optimizer = Optimizer(("z", z), ("a", a), ("B", B));
        using var grad = ones(1);
        optimizer.Step(_ => grad);
        Assert.Equal(["B", "a", "z"], optimizer.StateTensors().Select(kv => kv.Key.Split('.')[1]).Distinct());
    }

    [Fact]
    public void AdamWLoadStateSkipsParametersWithoutStateRefusesWrongShapesAndFreesTheStateItReplaces()
    {
        using var a = ones(2);
        using var b = ones(2);
        using var optimizer = Optimizer(("a", a), ("b", b));
        using var grad = ones(2);
        optimizer.Step(_ => grad);
        var replaced = optimizer.StateTensors().Where(kv => kv.Key is "state.a.exp_avg" or "state.a.exp_avg_sq").Select(kv => kv.Value).ToList();

        using var step = tensor(7L);
        using var moment = full(2, 0.25f);
        optimizer.LoadState(name => name switch {
            "state.a.step" => step, "state.a.exp_avg" => moment, "state.a.exp_avg_sq" => moment, _ => null,
        });
        Assert.All(replaced, m => Assert.True(m.IsInvalid, "the moments the loaded state replaced are freed"));
        var state = optimizer.StateTensors().ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.Equal(7L, state["state.a.step"].item<long>());
        Assert.Equal(new float[] { 0.25f, 0.25f }, state["state.a.exp_avg"].data<float>().ToArray());
        // b had state before and the checkpoint holds none for it: it keeps its own.
        Assert.Equal(1L, state["state.b.step"].item<long>());

        using var wrong = zeros(3);
        var error = Assert.Throws<InvalidDataException>(() => optimizer.LoadState(name => name switch {
            "state.b.step" => step, "state.b.exp_avg" => wrong, "state.b.exp_avg_sq" => wrong, _ => null,
        }));
        Assert.Contains("state.b.exp_avg", error.Message);
    }

    [Fact]
    public void AdamWDisposeFreesItsMoments()
    {
        using var a = ones(2);
        var optimizer = Optimizer(("a", a));
        using var grad = ones(2);
        optimizer.Step(_ => grad);
        var moments = optimizer.StateTensors().Where(kv => !kv.Key.EndsWith(".step", StringComparison.Ordinal)).Select(kv => kv.Value).ToList();
        optimizer.Dispose();
        Assert.All(moments, m => Assert.True(m.IsInvalid));
        Assert.Empty(optimizer.StateTensors());
    }

    [Fact]
    public void LoraLinearTakesRankOneRefusesZeroAndStartsAsKaimingUniformAtZeroUpdate()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoraLinear(nn.Linear(16, 4), rank: 0, alpha: 1));
        using var one = new LoraLinear(nn.Linear(16, 4), rank: 1, alpha: 1);
        Assert.Equal([1L, 16L], one.lora_A.shape);

        using var generator = new Generator(5);
        using var lora = new LoraLinear(nn.Linear(400, 8), rank: 64, alpha: 8, generator);
        Assert.True(lora.lora_A.requires_grad && lora.lora_B.requires_grad);
        double bound = 1 / Math.Sqrt(400);
        var values = lora.lora_A.data<float>().ToArray();
        Assert.All(values, v => Assert.InRange(v, -bound, bound));
        // 25,600 draws of U(−bound, bound) reach close to both ends.
        Assert.True(values.Max() > 0.95 * bound && values.Min() < -0.95 * bound, $"lora_A spans [{values.Min()}, {values.Max()}], bound {bound}");
        Assert.Equal(0f, lora.lora_B.abs().max().item<float>());
    }

    [Fact]
    public void MergingTwiceAddsTheUpdateOnce()
    {
        using var lora = new LoraLinear(nn.Linear(6, 3), rank: 2, alpha: 4);
        using (no_grad()) lora.lora_B.fill_(0.5f);
        using var before = lora.base_layer.weight!.detach().clone();
        using var update = lora.lora_B.matmul(lora.lora_A).mul(lora.Scaling);
        lora.Merge();
        lora.Merge();
        Assert.True(lora.base_layer.weight!.sub(before.add(update)).abs().max().item<float>() < 1e-6f);
    }

    [Fact]
    public void InjectionWrapsLinearLayersOnlyAndMergeAllMergesEachOnce()
    {
        using var scope = NewDisposeScope();
        var model = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 2);   // untied: lm_head is a Linear at the root
        var wrapped = LoraInjector.Inject(model, ["*"], rank: 2, alpha: 2, seed: 1);
        // 7 projections per layer and the head; the attention and MLP modules match "*" too but are not Linear.
        Assert.Equal(7 * model.Config.NumHiddenLayers + 1, wrapped.Count);
        Assert.Contains("lm_head", wrapped);
        Assert.Equal(wrapped.Count, LoraInjector.MergeAll(model));
        Assert.Equal(0, LoraInjector.MergeAll(model));
        Assert.All(model.modules().OfType<LoraLinear>(), l => Assert.True(l.Merged));

        // A bare Linear: the root itself is never a target, so nothing matches.
        var error = Assert.Throws<TrainingConfigException>(() => LoraInjector.Inject(nn.Linear(4, 4), ["*"], rank: 1, alpha: 1, seed: 1));
        Assert.Contains("lora_module_name", error.Message);
    }
}
