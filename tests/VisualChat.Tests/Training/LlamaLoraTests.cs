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
            foreach (var lora in model.modules().OfType<LoraLinear>())
                lora.lora_B.copy_(randn(lora.lora_B.shape) * 0.1);

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
}
