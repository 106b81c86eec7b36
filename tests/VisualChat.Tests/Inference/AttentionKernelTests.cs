using TorchSharp;
using VisualChat.Attention;
using VisualChat.Model;
using VisualChat.Tests.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Inference;

public class AttentionKernelTests
{
    /// <summary>Delegates to the causal kernel and records what the model handed it.</summary>
    sealed class RecordingKernel : IAttentionKernel
    {
        public int Prepared;
        public int Attended;
        public List<long[]> Modalities = new();
        public List<long> PastLengths = new();

        public void Prepare(AttentionContext context)
        {
            Prepared++;
            PastLengths.Add(context.PastLength);
            Modalities.Add(context.TokenModality is null ? Array.Empty<long>() : context.TokenModality.flatten().data<long>().ToArray());
            CausalAttentionKernel.Instance.Prepare(context);
        }

        public Tensor Attend(Tensor q, Tensor k, Tensor v, int layerIndex, AttentionContext context)
        {
            Attended++;
            return CausalAttentionKernel.Instance.Attend(q, k, v, layerIndex, context);
        }
    }

    [Fact]
    public void KernelIsPreparedOncePerForwardAndSeesModalityThroughTheCache()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny());
        var reference = model.forward(new CausalLMInput(InputIds: tensor(new long[] { 1, 5, 77, 3 }).unsqueeze(0))).Logits;
        var kernel = new RecordingKernel();
        model.AttentionKernel = kernel;
        using var cache = model.CreateCache();
        model.forward(new CausalLMInput(InputIds: tensor(new long[] { 1, 5, 77 }).unsqueeze(0), Cache: cache,
            TokenModality: tensor(new long[] { 0, 1, 1 }).unsqueeze(0)));
        var last = model.forward(new CausalLMInput(InputIds: tensor(new long[] { 3 }).unsqueeze(0), Cache: cache)).Logits;

        Assert.Equal(2, kernel.Prepared);                      // masks built per forward, not per layer
        Assert.Equal(2 * 2, kernel.Attended);                  // 2 forwards × 2 layers
        Assert.Equal(new long[] { 0, 3 }, kernel.PastLengths);
        Assert.Equal(new long[] { 0, 1, 1 }, kernel.Modalities[0]);
        Assert.Equal(new long[] { 0, 1, 1, 1 }, kernel.Modalities[1]);   // cached modality kept, the untagged new token is text (1), not padding
        Assert.True(LlamaTestModels.MaxAbsDiff(last, reference.narrow(1, 3, 1)) < 1e-5f);
    }

    [Fact]
    public void PositionIdsFollowHfCumsumRule()
    {
        using var scope = NewDisposeScope();
        var padding = tensor(new[] { false, false, true, true, true, true, true, true, true, true }).view(2, 5);
        var all = LlamaModel.DefaultPositions(padding, 2, 0, 5, CPU);
        Assert.Equal(new long[] { 1, 1, 0, 1, 2, 0, 1, 2, 3, 4 }, all.flatten().data<long>().ToArray());
        var lastTwo = LlamaModel.DefaultPositions(padding, 2, 3, 2, CPU);
        Assert.Equal(new long[] { 1, 2, 3, 4 }, lastTwo.flatten().data<long>().ToArray());
        var unpadded = LlamaModel.DefaultPositions(null, 2, 4, 2, CPU);
        Assert.Equal(new long[] { 4, 5, 4, 5 }, unpadded.flatten().data<long>().ToArray());
    }

    [Fact]
    public void ExplicitPositionIdsMatter()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        // Dynamic NTK scaling depends on the largest position, so shifted positions change the logits.
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny(ropeScaling: new RopeScalingConfig { Type = "dynamic", Factor = 2 }));
        var ids = tensor(new long[] { 1, 5, 77, 3 }).unsqueeze(0);
        var plain = model.forward(new CausalLMInput(InputIds: ids)).Logits;
        var shifted = model.forward(new CausalLMInput(InputIds: ids, PositionIds: arange(20, 24, dtype: ScalarType.Int64).unsqueeze(0))).Logits;
        Assert.True(LlamaTestModels.MaxAbsDiff(plain, shifted) > 1e-3f);
    }
}
