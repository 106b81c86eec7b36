using TorchSharp;
using VisualChat.Attention;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Multimodal;

/// <summary>
/// The attention modes seen from a whole <see cref="VisualChatModel"/> forward (logits, not the kernel alone), and the
/// per-forward life of the kernels' state.
/// </summary>
public class StatelessAttentionTests
{
    static VisualChatModel Tiny(AttentionMode mode, long seed = 3) => VisualChatPresets.Create(VisualChatPresets.Tiny, seed, mode);

    static Tensor Images(params float[] fills) => stack(fills.Select(f => full(new long[] { 3, 32, 32 }, f)).ToArray());

    static Tensor Ids(params int[] ids) => tensor(ids.Select(i => (long)i).ToArray(), new long[] { 1, ids.Length });

    /// <summary>The dense two-softmax MMCA of the paper on a modality map given by the test (not read from the model's context).</summary>
    sealed class DenseMmcaReference(Tensor modality) : IAttentionKernel
    {
        public void Prepare(AttentionContext context) { }
        public Tensor Attend(Tensor q, Tensor k, Tensor v, int layerIndex, AttentionContext context) =>
            DenseMultiModalCausalAttention.Attend(q, k, v, modality);
    }

    [Fact]
    public void MmcaModelForward_ImagesSeeOnlyThemselves_TextReadsImagesThroughASecondSoftmax()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var mmca = Tiny(AttentionMode.Mmca);
        using var causal = Tiny(AttentionMode.Causal);
        int img = mmca.Config.ImageTokenId, n = mmca.ImageTokens;
        // text, text, <image> (n tokens), text, text
        var first = mmca.forward(new VisualChatBatch(Ids(40, 41, img, 42, 43), null, null, [1], Images(0.3f)));
        var changedText = mmca.forward(new VisualChatBatch(Ids(50, 41, img, 42, 43), null, null, [1], Images(0.3f)));
        var changedImage = mmca.forward(new VisualChatBatch(Ids(40, 41, img, 42, 43), null, null, [1], Images(-0.4f)));
        var imageRows = first.Logits.narrow(1, 2, n);
        var textAfter = first.Logits.narrow(1, 2 + n, 2);

        // An image token attends only to itself: changing the text before it leaves its logits exactly as they were,
        // while the text after the image does change (it reads the earlier text).
        Assert.Equal(0f, (changedText.Logits.narrow(1, 2, n) - imageRows).abs().max().item<float>());
        Assert.True((changedText.Logits.narrow(1, 2 + n, 2) - textAfter).abs().max().item<float>() > 1e-3f);
        // Under plain causal attention the same change does reach the image rows (so the check above can fail).
        var causalFirst = causal.forward(new VisualChatBatch(Ids(40, 41, img, 42, 43), null, null, [1], Images(0.3f)));
        var causalChanged = causal.forward(new VisualChatBatch(Ids(50, 41, img, 42, 43), null, null, [1], Images(0.3f)));
        Assert.True((causalChanged.Logits.narrow(1, 2, n) - causalFirst.Logits.narrow(1, 2, n)).abs().max().item<float>() > 1e-3f);

        // Text after the image reads it; text before it cannot.
        Assert.True((changedImage.Logits.narrow(1, 2 + n, 2) - textAfter).abs().max().item<float>() > 1e-3f);
        Assert.Equal(0f, (changedImage.Logits.narrow(1, 0, 2) - first.Logits.narrow(1, 0, 2)).abs().max().item<float>());

        // The whole forward equals the same model run with the paper's dense two-softmax attention on the modality
        // map the test expects (text 2, image n, text 2, then padding to a multiple of 8), and differs from the
        // one-softmax causal forward.
        long length = first.Logits.shape[1];
        var expectedModality = cat([full(1, 2, TokenModality.Text), full(1, n, TokenModality.Image), full(1, 2, TokenModality.Text),
            full(1, length - n - 4, TokenModality.Padding)], 1);
        Assert.Equal(expectedModality.data<long>().ToArray(), first.Input.Modality.data<long>().ToArray());
        var kernel = mmca.lm.AttentionKernel;
        mmca.lm.AttentionKernel = new DenseMmcaReference(expectedModality);
        try {
            var dense = mmca.forward(new VisualChatBatch(Ids(40, 41, img, 42, 43), null, null, [1], Images(0.3f)));
            float diff = (dense.Logits - first.Logits).abs().max().item<float>();
            Assert.True(diff < 1e-4f, $"mmca model logits differ from the dense two-softmax reference by {diff}");
        } finally {
            mmca.lm.AttentionKernel = kernel;
        }
        Assert.True((causalFirst.Logits.narrow(1, 2, n + 2) - first.Logits.narrow(1, 2, n + 2)).abs().max().item<float>() > 1e-3f);

        static Tensor full(long batch, long length, TokenModality value) =>
            torch.full(new long[] { batch, length }, (long)value, dtype: ScalarType.Int64);
    }

    /// <summary>Wraps a kernel and keeps each forward's context and state, to see when they end.</summary>
    sealed class Spy(IAttentionKernel inner) : IAttentionKernel
    {
        public readonly List<AttentionContext> Contexts = [];
        public readonly List<IDisposable?> States = [];
        public readonly List<int> Layers = [];
        public void Prepare(AttentionContext context) { inner.Prepare(context); Contexts.Add(context); States.Add(context.KernelState); }
        public Tensor Attend(Tensor q, Tensor k, Tensor v, int layerIndex, AttentionContext context)
        {
            Layers.Add(layerIndex);
            return inner.Attend(q, k, v, layerIndex, context);
        }
    }

    [Theory]
    [InlineData(AttentionMode.Mmca)]
    [InlineData(AttentionMode.CausalCross)]
    public void PerForwardStateEndsWithTheForward_AndLayersAreNamedNotCounted(AttentionMode mode)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var model = Tiny(mode);
        int img = model.Config.ImageTokenId;
        var spy = new Spy(model.lm.AttentionKernel);
        model.lm.AttentionKernel = spy;
        model.forward(new VisualChatBatch(Ids(40, img, 41, 42), null, null, [1], Images(0.2f)));
        model.forward(new VisualChatBatch(Ids(43, img, 44), null, null, [1], Images(0.1f)));
        Assert.Equal(2, spy.States.Count);
        Assert.All(spy.States, state => Assert.NotNull(state));
        Assert.All(spy.Contexts, context => Assert.Null(context.KernelState));   // the forward disposed its context
        Assert.Equal([0, 1, 0, 1], spy.Layers);
        if (spy.States[0] is MmcaPlan plan) Assert.True(plan.TextQueryRows.IsInvalid, "the plan's tensors are freed with the forward");
    }

    [Theory]
    [InlineData(AttentionMode.Mmca)]
    [InlineData(AttentionMode.CausalCross)]
    public void GradientCheckpointingGivesTheSameGradients_ProjectionAndCrossAttentionIncluded(AttentionMode mode)
    {
        // The checkpointed backward rebuilds each layer's per-forward state (MMCA plan, cross-attention memory and
        // masks) after the forward's context has ended; gradients must equal those of the plain backward.
        using var model = Tiny(mode, seed: 5);
        if (model.cross_attn is not null)
            using (no_grad()) foreach (var layer in model.cross_attn) layer.attn_gate.fill_(0.6);
        int img = model.Config.ImageTokenId;
        var ids = Ids(40, img, 41, 42, img, 43, 44);
        var labels = Ids(-100, -100, 41, 42, -100, 43, 44);

        Dictionary<string, Tensor> Gradients(bool checkpointing)
        {
            using var scope = NewDisposeScope();
            model.lm.GradientCheckpointing = checkpointing;
            model.train();
            model.zero_grad();
            var output = model.forward(new VisualChatBatch(ids, labels, null, [2], Images(0.2f, -0.3f)));
            output.Loss!.backward();
            return model.named_parameters().Where(p => p.parameter.grad is not null)
                .ToDictionary(p => p.name, p => p.parameter.grad!.detach().clone().DetachFromDisposeScope());
        }

        var plain = Gradients(false);
        var checkpointed = Gradients(true);
        Assert.Contains(plain.Keys, name => name.StartsWith("projection.", StringComparison.Ordinal));
        if (mode == AttentionMode.CausalCross) Assert.Contains(plain.Keys, name => name.StartsWith("cross_attn.1.", StringComparison.Ordinal));
        Assert.Equal(plain.Keys.Order(), checkpointed.Keys.Order());
        foreach (var (name, grad) in plain) {
            Assert.True(grad.abs().max().item<float>() > 0, $"{name} got no gradient");
            float diff = (grad - checkpointed[name]).abs().max().item<float>();
            Assert.True(diff <= 1e-5f * Math.Max(1f, grad.abs().max().item<float>()), $"{name}: checkpointed gradient differs by {diff}");
        }
    }
}
