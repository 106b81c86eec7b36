using VisualChat.Benchmarks;

namespace VisualChat.Tests.Model;

public class DecodeBenchmarkTests
{
    [Fact]
    public void RowsCountTheWeightsOfEachFormatAndScaleTheBoundWithTheBatch()
    {
        var config = LlamaTestModels.Tiny();   // untied: head 128×64; 2 layers of q,k,v,o 64×64 (k, v 32×64) and 3 MLP matrices 96×64
        config.MaxPositionEmbeddings = 64;
        long perLayer = 64 * 64 + 32 * 64 + 32 * 64 + 64 * 64 + 3 * 96 * 64;
        long matrices = 2 * perLayer + 128 * 64;
        var rows = DecodeBenchmark.Run(config, ["fp32", "q8"], [1, 2], bandwidth: () => 1e9, newTokens: 4, promptTokens: 3, repeats: 2).ToList();
        Assert.Equal(["libtorch forward, fp32 (baseline)", "fused, fp32", "fused, fp32", "fused, q8", "fused, q8"], rows.Select(r => r.Variant));
        Assert.Equal([1, 1, 2, 1, 2], rows.Select(r => r.Batch));
        // fp32: 4 bytes a weight plus one 64-float embedding row per sequence; q8: 1 byte a weight plus a 4-byte scale per 32.
        Assert.Equal(matrices * 4 + 64 * 4, rows[1].WeightBytesPerStep);
        Assert.Equal(matrices * 4 + 2 * 64 * 4, rows[2].WeightBytesPerStep);
        Assert.Equal(matrices + matrices / 32 * 4 + 64 * 4, rows[3].WeightBytesPerStep);
        Assert.Equal(2 * 1e9 / rows[4].WeightBytesPerStep, rows[4].ReadBoundTokensPerSecond, 6);
        Assert.Null(rows[4].ArithmeticBoundTokensPerSecond);
        Assert.Equal(rows[4].ReadBoundTokensPerSecond, rows[4].BoundTokensPerSecond);
        Assert.All(rows, r => Assert.True(r.TokensPerSecond > 0));
        Assert.All(rows.Skip(1), r => Assert.True(r.MatrixMs > 0 && r.AttentionMs > 0, $"{r.Variant} batch {r.Batch}: no time split"));
        Assert.Throws<ArgumentException>(() => DecodeBenchmark.Run(config, ["int3"], [1], () => 1e9).ToList());
    }

    [Fact]
    public void PrefillCountsTheMatrixProductsOfThePromptAndTheHeadOnce()
    {
        var config = LlamaTestModels.Tiny();
        config.MaxPositionEmbeddings = 64;
        long perLayer = 64 * 64 + 32 * 64 + 32 * 64 + 64 * 64 + 3 * 96 * 64;
        var result = DecodeBenchmark.Prefill(config, tokens: 20, gemmFlops: 1e9, repeats: 1);
        double seconds = 20 / result.TokensPerSecond;
        Assert.Equal((2.0 * 20 * 2 * perLayer + 2.0 * 128 * 64) / seconds, result.FlopsPerSecond, 3);
        Assert.Equal(result.FlopsPerSecond / 1e9, result.ShareOfGemmPeak, 6);
    }

    [Fact]
    public void Q8AgreementIsHighButNotPerfectOnRandomWeights()
    {
        var config = LlamaTestModels.Tiny();
        config.MaxPositionEmbeddings = 128;
        var agreement = Assert.Single(DecodeBenchmark.Agreements(config, [8], positions: 100));
        Assert.Equal(100, agreement.Positions);
        Assert.InRange(agreement.TopOneAgreement, 0.8, 1.0);
        Assert.InRange(agreement.RelativeLogitRmsError, 1e-4, 0.05);   // int8 with 32-weight blocks: about 1 %, never zero
    }
}
