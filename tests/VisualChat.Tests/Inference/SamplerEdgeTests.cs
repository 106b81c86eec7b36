using VisualChat.Inference.Generation;
using static TorchSharp.torch;

namespace VisualChat.Tests.Inference;

/// <summary>Edges of the sampler that the distribution tests do not reach (each written against a mutant that survived
/// a Stryker run): options are validated when the sampler is built, and top-p keeps at least one token even when
/// float rounding leaves the total probability below 1 − p.</summary>
public class SamplerEdgeTests
{
    [Fact]
    public void BuildingASamplerValidatesItsOptions()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(new GenerationOptions { Temperature = -0.5 }));
        Assert.Contains("Temperature", error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(new GenerationOptions { TopP = 1.5 }));
    }

    [Fact]
    public void TopPKeepsOneTokenWhenEveryCumulativeSumIsWithinOneMinusP()
    {
        using var scope = NewDisposeScope();
        // Four equal logits: the sorted cumulative sums are exactly 0.25, 0.5, 0.75, 1. With p = 1e-9, 1 − p rounds to
        // 1 in float, so every entry is ≤ 1 − p and only the explicit keep-the-last rule leaves a token to sample.
        var logits = zeros(2, 4);
        var filtered = Sampler.ApplyTopP(logits, 1e-9);
        Assert.Equal(new long[] { 1, 1 }, filtered.isfinite().sum(-1).data<long>().ToArray());
        using var sampler = new Sampler(new GenerationOptions { Temperature = 1.0, TopP = 1e-9, Seed = 1 });
        var drawn = sampler.Sample(logits, zeros(2, 4, dtype: ScalarType.Bool));
        Assert.True(drawn.ge(0).logical_and(drawn.lt(4)).all().item<bool>());
    }
}
