using VisualChat.Benchmarks;
using VisualChat.Model.Presets;
using static TorchSharp.torch;

namespace VisualChat.Tests.Model;

public class DecodeBenchmarkTests
{
    [Fact]
    public void BytesPerToken_CountsEveryWeightOnceAndOneEmbeddingRow()
    {
        var tied = LanguageModelPresets.Llama100M.Config();
        Assert.Equal((tied.ParameterCount() + 768) * 4, DecodeBenchmark.WeightBytesPerToken(tied, ScalarType.Float32));
        var untied = LlamaTestModels.Tiny();
        long embedding = 128L * 64;
        Assert.Equal((untied.ParameterCount() - embedding + 64) * 2, DecodeBenchmark.WeightBytesPerToken(untied, ScalarType.BFloat16));
    }

    [Fact]
    public void Run_ReportsRatesAgainstTheGivenBound()
    {
        var config = LlamaTestModels.Tiny();
        var rows = DecodeBenchmark.Run(config, [ScalarType.Float32], bandwidthBytesPerSecond: 1e9, newTokens: 4, promptTokens: 3).ToList();
        var row = Assert.Single(rows);
        Assert.Equal(4, row.DecodedTokens);
        Assert.True(row.TokensPerSecond > 0);
        Assert.Equal(1e9 / row.BytesPerToken, row.BoundTokensPerSecond, 6);
        Assert.Equal(row.TokensPerSecond / row.BoundTokensPerSecond, row.RatioToBound, 9);
    }
}
