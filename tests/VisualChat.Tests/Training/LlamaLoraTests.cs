using VisualChat.Model;
using VisualChat.Tests.Model;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Tests.Training;

public class LlamaLoraTests
{
    [Fact]
    public void LoraOnLlamaProjections_MergedEqualsUnmerged_AndUnwrapRestoresTheHfNames()
    {
        using var scope = NewDisposeScope();
        var model = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 4);
        var originalKeys = model.state_dict().Keys.Order().ToList();
        var wrapped = LoraInjector.Inject(model, ["q_proj", "v_proj", "down_proj"], rank: 2, alpha: 4, seed: 1);
        Assert.Equal(3 * model.Config.NumHiddenLayers, wrapped.Count);
        Assert.Contains("model.layers.0.self_attn.q_proj.lora_A", model.state_dict().Keys);
        using (no_grad())
        {
            foreach (var lora in model.modules().OfType<LoraLinear>())
                lora.lora_B.copy_(randn(lora.lora_B.shape) * 0.1);
        }

        var ids = tensor(new long[] { 1, 5, 9, 3, 7, 2 }).unsqueeze(0);
        model.eval();
        var unmerged = model.forward(new CausalLMInput(InputIds: ids)).Logits.detach().clone();
        var plain = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 4);
        var basePlain = plain.forward(new CausalLMInput(InputIds: ids)).Logits;
        Assert.True((unmerged - basePlain).abs().max().item<float>() > 1e-4f, "the adapters must change the output");

        Assert.Equal(wrapped.Count, LoraInjector.MergeAndUnwrap(model));
        var merged = model.forward(new CausalLMInput(InputIds: ids)).Logits;
        Assert.True((unmerged - merged).abs().max().item<float>() < 1e-5f);
        Assert.Equal(originalKeys, model.state_dict().Keys.Order().ToList());
        Assert.IsType<TorchSharp.Modules.Linear>(model.model.layers[0].self_attn.q_proj);
    }
    [Fact]
    public void LoraLinear_ScalesTheUpdateByAlphaOverRank_InForwardAndMerge()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var linear = TorchSharp.torch.nn.Linear(6, 5);
        const int rank = 4;
        const double alpha = 8;
        var lora = new LoraLinear(linear, rank, alpha, new Generator(11));
        Assert.Equal(2.0, lora.Scaling);   // PEFT: lora_alpha / r
        lora.lora_B.copy_(randn(lora.lora_B.shape, generator: new Generator(12)));
        var x = randn(new long[] { 3, 6 }, generator: new Generator(13));
        var w = linear.weight!.detach().clone();
        var b = linear.bias!.detach().clone();
        var a = lora.lora_A.detach().clone();
        var bMatrix = lora.lora_B.detach().clone();
        // Reference written out: x·Wᵀ + b + (x·Aᵀ·Bᵀ)·(alpha/r) with alpha/r = 2 as a literal.
        var expected = x.matmul(w.t()) + b + x.matmul(a.t()).matmul(bMatrix.t()) * 2.0;
        var actual = lora.forward(x);
        Assert.True((actual - expected).abs().max().item<float>() < 1e-5f, $"unmerged LoRA output differs from x·Wᵀ + b + 2·x·Aᵀ·Bᵀ by {(actual - expected).abs().max().item<float>()}");
        lora.Merge();
        var mergedWeight = w + bMatrix.matmul(a) * 2.0;
        Assert.True((linear.weight!.detach() - mergedWeight).abs().max().item<float>() < 1e-5f, "merged weight must be W + 2·B·A");
        Assert.True((lora.forward(x) - expected).abs().max().item<float>() < 1e-5f);
    }
}
