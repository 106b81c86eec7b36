using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Tests.Attention;

/// <summary>What a mutation run of the attention kernels left alive (docs/mutation-testing.md): the shape checks of
/// MultiModalCausalAttention.Attend and AttentionMasks, and what the causal kernel prepares for each kind of forward —
/// no mask for a decode step or an unpadded prefill (SDPA's causal path), an explicit mask only when it is needed.</summary>
public class AttentionKernelEdgeTests
{
    const long T = (long)TokenModality.Text, I = (long)TokenModality.Image;

    static AttentionContext Context(long past, long query, Tensor? keyPadding = null) => new() {
        QueryPositions = arange(past, past + query, dtype: ScalarType.Int64).unsqueeze(0),
        PastLength = past, QueryLength = query, KeyPaddingMask = keyPadding,
    };

    [Fact]
    public void TheCausalKernelUsesSdpaCausalPathForAnUnpaddedPrefill_NoMaskForOneNewToken_AndAMaskOtherwise()
    {
        using var scope = NewDisposeScope();
        using (var prefill = Context(0, 5)) {
            prefill.Mask = ones(1, dtype: ScalarType.Bool);   // stale state from elsewhere is cleared
            CausalAttentionKernel.Instance.Prepare(prefill);
            Assert.True(prefill.UseCausalFastPath);
            Assert.Null(prefill.Mask);
        }
        using (var decode = Context(7, 1)) {
            decode.UseCausalFastPath = true;
            CausalAttentionKernel.Instance.Prepare(decode);
            Assert.False(decode.UseCausalFastPath);
            Assert.Null(decode.Mask);
        }
        using (var firstToken = Context(0, 1)) {
            CausalAttentionKernel.Instance.Prepare(firstToken);
            Assert.Null(firstToken.Mask);
        }
        using (var chunk = Context(3, 2)) {        // a second prefill chunk: the causal path would misalign the diagonal
            CausalAttentionKernel.Instance.Prepare(chunk);
            Assert.False(chunk.UseCausalFastPath);
            Assert.Equal(new[] { true, true, true, true, false, true, true, true, true, true }, chunk.Mask!.flatten().data<bool>().ToArray());
        }
        using (var padded = Context(0, 3, tensor(new[] { false, true, true }).view(1, 3))) {
            CausalAttentionKernel.Instance.Prepare(padded);
            Assert.False(padded.UseCausalFastPath);
            Assert.Equal(new long[] { 1, 1, 3, 3 }, padded.Mask!.shape);
        }
    }

    [Fact]
    public void APaddingMaskOfTheWrongLengthIsRefused()
    {
        using var scope = NewDisposeScope();
        var error = Assert.Throws<ArgumentException>(() => AttentionMasks.Causal(2, 1, ones(1, 2, dtype: ScalarType.Bool), CPU));
        Assert.Equal("keyPaddingMask", error.ParamName);
        Assert.Contains("cached 1 + new 2", error.Message);
    }

    [Fact]
    public void MmcaRefusesInputsItsPlanWasNotBuiltFor()
    {
        using var scope = NewDisposeScope();
        using var plan = new MmcaPlan(tensor(new[] { T, I, T, T }).view(1, 4), 4);
        Tensor Q(long batch, long heads, long length, ScalarType dtype = ScalarType.Float32) => randn(new[] { batch, heads, length, 8L }).to(dtype);

        // Each mismatch alone is refused (a check joined with && instead of || would let a single one through).
        Assert.Contains("multiple", Assert.Throws<ArgumentException>(() => MultiModalCausalAttention.Attend(Q(1, 3, 4), Q(1, 2, 4), Q(1, 2, 4), plan)).Message);
        Assert.Contains("1×4 queries over 4 keys, but got 2×4 over 4", Assert.Throws<ArgumentException>(() => MultiModalCausalAttention.Attend(Q(2, 2, 4), Q(2, 2, 4), Q(2, 2, 4), plan)).Message);
        Assert.Contains("but got 1×3 over 4", Assert.Throws<ArgumentException>(() => MultiModalCausalAttention.Attend(Q(1, 2, 3), Q(1, 2, 4), Q(1, 2, 4), plan)).Message);
        Assert.Contains("but got 1×4 over 5", Assert.Throws<ArgumentException>(() => MultiModalCausalAttention.Attend(Q(1, 2, 4), Q(1, 2, 5), Q(1, 2, 5), plan)).Message);
        Assert.Contains("built for Float32", Assert.Throws<ArgumentException>(() =>
            MultiModalCausalAttention.Attend(Q(1, 2, 4, ScalarType.Float64), Q(1, 2, 4, ScalarType.Float64), Q(1, 2, 4, ScalarType.Float64), plan)).Message);
        Assert.Equal(new long[] { 1, 2, 4, 8 }, MultiModalCausalAttention.Attend(Q(1, 2, 4), Q(1, 2, 4), Q(1, 2, 4), plan).shape);
    }
}
