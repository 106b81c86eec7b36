using TorchSharp;
using VisualChat.Attention;
using VisualChat.Model;
using VisualChat.Tests.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Attention;

/// <summary>The <c>mmca</c> kernel as the decoder drives it: half precision, and padding that the modality map disagrees with.</summary>
public class MmcaKernelTests
{
    const long P = (long)TokenModality.Padding, T = (long)TokenModality.Text, I = (long)TokenModality.Image;

    [Theory]
    [InlineData(ScalarType.BFloat16, 0.03)]
    [InlineData(ScalarType.Float16, 0.005)]
    public void HalfPrecisionForwardAndBackwardMatchFloat32(ScalarType dtype, double tolerance)
    {
        // A decoder under MMCA in half precision on CPU tensors, against the same weights in fp32: logits, the gradient
        // of the input embeddings and of every layer weight, each within the dtype's precision (relative to its scale).
        using var scope = NewDisposeScope();
        var config = LlamaTestModels.Tiny();
        using var full = new LlamaForCausalLM(config, seed: 21);
        using var half = new LlamaForCausalLM(config, seed: 21);
        half.to(dtype);
        full.AttentionKernel = half.AttentionKernel = MmcaAttentionKernel.Instance;
        var modality = tensor(new[] { T, I, I, T, T, I, T, T, P, T, I, I, I, T, T, T }, new long[] { 2, 8 });
        var mask = modality.ne(P).to(ScalarType.Int64);
        using var generator = new Generator(22);
        var embeds = randn(new long[] { 2, 8, config.HiddenSize }, generator: generator);
        var upstream = randn(new long[] { 2, 8, config.VocabSize }, generator: generator);

        (Tensor Logits, Tensor EmbedsGrad, Dictionary<string, Tensor> Grads) Run(LlamaForCausalLM model)
        {
            model.zero_grad();
            var leaf = embeds.to(model.model.embed_tokens.weight!.dtype).detach().requires_grad_(true);
            var logits = model.forward(new CausalLMInput(InputsEmbeds: leaf, AttentionMask: mask, TokenModality: modality)).Logits;
            (logits.to(ScalarType.Float32) * upstream).sum().backward();
            var grads = model.named_parameters().Where(p => p.name.Contains("layers")).ToDictionary(p => p.name, p => p.parameter.grad!.to(ScalarType.Float32));
            return (logits.to(ScalarType.Float32), leaf.grad!.to(ScalarType.Float32), grads);
        }

        var reference = Run(full);
        var actual = Run(half);
        AssertClose(reference.Logits, actual.Logits, tolerance, $"{dtype} logits");
        AssertClose(reference.EmbedsGrad, actual.EmbedsGrad, tolerance, $"{dtype} input-embedding gradient");
        foreach (var (name, grad) in reference.Grads) AssertClose(grad, actual.Grads[name], tolerance, $"{dtype} gradient of {name}");
    }

    static void AssertClose(Tensor expected, Tensor actual, double tolerance, string what)
    {
        float scale = expected.abs().max().item<float>();
        float diff = (expected - actual).abs().max().item<float>();
        Assert.True(scale > 0, $"{what}: the reference is all zero, the comparison would prove nothing");
        Assert.True(diff <= tolerance * scale, $"{what}: differs by {diff} (scale {scale}, allowed {tolerance * scale})");
    }

    [Fact]
    public void KeyPaddingWinsOverAModalityMapThatCallsThePositionTextOrImage()
    {
        // Positions 2 (tagged image) and 5 (tagged text) of row 0 and 0 (text) of row 1 are padding by the key-padding
        // mask: no query may read them, whatever the modality map says. Oracle: the dense two-softmax formulation on
        // the modality map with those positions set to padding.
        using var scope = NewDisposeScope();
        var modality = tensor(new[] { T, I, I, T, T, T, I, T, T, T, I, I, T, T, I, T }, new long[] { 2, 8 });
        var padding = tensor(new[] { 1L, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1 }, new long[] { 2, 8 }).to(ScalarType.Bool);
        using var generator = new Generator(5);
        var q = randn(new long[] { 2, 4, 8, 8 }, generator: generator);
        var k = randn(new long[] { 2, 4, 8, 8 }, generator: generator);
        var v = randn(new long[] { 2, 4, 8, 8 }, generator: generator);
        using var context = new AttentionContext {
            QueryPositions = arange(8).unsqueeze(0).expand(2, 8), KeyPaddingMask = padding, PastLength = 0, QueryLength = 8, TokenModality = modality,
        };
        MmcaAttentionKernel.Instance.Prepare(context);
        var output = MmcaAttentionKernel.Instance.Attend(q, k, v, 0, context);

        var expected = DenseMultiModalCausalAttention.Attend(q, k, v, modality.masked_fill(padding.logical_not(), (long)TokenModality.Padding));
        Assert.True((expected - output).abs().max().item<float>() < 1e-5f, "mmca with a key-padding mask differs from the dense reference");
        // and the padded keys' values really matter to the unmasked computation (so the comparison can fail)
        var ignoringPadding = DenseMultiModalCausalAttention.Attend(q, k, v, modality);
        Assert.True((ignoringPadding - expected).abs().max().item<float>() > 1e-2f);
    }
}
