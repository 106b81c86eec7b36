using TorchSharp;
using VisualChat.Attention;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Model;

public class GradientCheckpointingTests
{
    /// <summary>Counts Attend calls, so the test sees that checkpointing really recomputes the layers in backward.</summary>
    sealed class CountingKernel : IAttentionKernel
    {
        public int Calls;
        public void Prepare(AttentionContext context) => CausalAttentionKernel.Instance.Prepare(context);
        public Tensor Attend(Tensor q, Tensor k, Tensor v, int layerIndex, AttentionContext context)
        {
            Calls++;
            return CausalAttentionKernel.Instance.Attend(q, k, v, layerIndex, context);
        }
    }

    sealed record Run(float Loss, Dictionary<string, Tensor> Grads, Tensor? EmbedsGrad, int AttendCalls);

    static Run LossAndGrads(LlamaForCausalLM model, bool checkpointing, Tensor? embeds, Tensor ids, Tensor? mask)
    {
        var kernel = new CountingKernel();
        model.AttentionKernel = kernel;
        model.GradientCheckpointing = checkpointing;
        model.train();
        model.zero_grad();
        Tensor? leaf = null;
        using var scope = NewDisposeScope();
        if (embeds is not null) leaf = embeds.detach().clone().requires_grad_(true);
        var output = model.forward(new CausalLMInput(InputIds: leaf is null ? ids : null, InputsEmbeds: leaf, AttentionMask: mask));
        var logits = output.Logits;
        var labels = ids.narrow(1, 1, ids.shape[1] - 1);
        var loss = nn.functional.cross_entropy(logits.narrow(1, 0, ids.shape[1] - 1).reshape(-1, logits.shape[2]), labels.reshape(-1));
        loss.backward();
        var grads = model.named_parameters().Where(p => p.parameter.grad is not null).ToDictionary(p => p.name, p => p.parameter.grad!.detach().clone().MoveToOuterDisposeScope());
        return new Run(loss.item<float>(), grads, leaf?.grad?.detach().clone().MoveToOuterDisposeScope(), kernel.Calls);
    }

    static void AssertSame(Run plain, Run checkpointed, int layers)
    {
        Assert.Equal(layers, plain.AttendCalls);
        Assert.Equal(2 * layers, checkpointed.AttendCalls);
        Assert.Equal(plain.Loss, checkpointed.Loss, 6);
        Assert.Equal(plain.Grads.Keys.OrderBy(k => k), checkpointed.Grads.Keys.OrderBy(k => k));
        foreach (var (name, grad) in plain.Grads) {
            Assert.True(grad.abs().max().item<float>() > 0 || name.Contains("embed"), $"{name} got no gradient");
            float diff = LlamaTestModels.MaxAbsDiff(grad, checkpointed.Grads[name]);
            Assert.True(diff <= 1e-6f, $"{name}: gradients differ by {diff}");
        }
        if (plain.EmbedsGrad is not null) {
            Assert.NotNull(checkpointed.EmbedsGrad);
            Assert.True(plain.EmbedsGrad.abs().max().item<float>() > 0);
            Assert.True(LlamaTestModels.MaxAbsDiff(plain.EmbedsGrad, checkpointed.EmbedsGrad!) <= 1e-6f);
        }
    }

    [Fact]
    public void SameLossAndGradients_WithInputIds()
    {
        using var model = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 3);
        using var ids = tensor(new long[] { 1, 5, 9, 33, 70, 2, 11, 4 }, new long[] { 2, 4 });
        AssertSame(LossAndGrads(model, false, null, ids, null), LossAndGrads(model, true, null, ids, null), 2);
    }

    [Fact]
    public void SameLossAndGradients_WithTrainableInputsEmbedsAndPadding()
    {
        using var model = new LlamaForCausalLM(LlamaTestModels.Tiny(tied: true), seed: 4);
        using var ids = tensor(new long[] { 0, 0, 7, 8, 9, 10, 11, 12, 13, 14 }, new long[] { 2, 5 });
        using var mask = tensor(new long[] { 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 }, new long[] { 2, 5 });
        using var generator = new torch.Generator(5);
        using var embeds = randn(new long[] { 2, 5, 64 }, generator: generator) * 0.5;
        AssertSame(LossAndGrads(model, false, embeds, ids, mask), LossAndGrads(model, true, embeds, ids, mask), 2);
    }

    [Fact]
    public void FrozenEmbeddingsInput_StillGivesLayerGradients()
    {
        using var model = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 6);
        using var ids = tensor(new long[] { 1, 5, 9, 33, 70, 2 }, new long[] { 1, 6 });
        // Inputs that need no gradient: the checkpoint must still reach the layer parameters.
        var plain = LossAndGrads(model, false, null, ids, null);
        model.model.embed_tokens.weight!.requires_grad = false;
        try {
            var checkpointed = LossAndGrads(model, true, null, ids, null);
            foreach (var (name, grad) in checkpointed.Grads)
                Assert.True(LlamaTestModels.MaxAbsDiff(grad, plain.Grads[name]) <= 1e-6f, name);
            Assert.Contains("model.layers.0.self_attn.q_proj.weight", checkpointed.Grads.Keys);
        } finally {
            model.model.embed_tokens.weight!.requires_grad = true;
        }
    }

    [Fact]
    public void EvalAndCachedForwards_DoNotCheckpoint()
    {
        using var model = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 7);
        var kernel = new CountingKernel();
        model.AttentionKernel = kernel;
        model.GradientCheckpointing = true;
        model.eval();
        using var ids = tensor(new long[] { 1, 5, 9 }).unsqueeze(0);
        using var scope = NewDisposeScope();
        var logits = model.forward(new CausalLMInput(InputIds: ids)).Logits;
        logits.sum().backward();
        Assert.Equal(2, kernel.Calls);
    }
}
