using TorchSharp;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Encoders;

public class QwenVisionTests
{
    private static readonly long[] TinyPixelShape = { 1, 3, 56, 56 };

    private static Tensor TinyPixels() =>
        cat(new[] { VisionTestSupport.FormulaPixels(TinyPixelShape, 0.0), VisionTestSupport.FormulaPixels(TinyPixelShape, 0.9) }, 0);

    [Fact]
    public void ParsesDeepSpeedVisualChatQwenClipConfig()
    {
        var config = QwenVisionConfig.Load(VisionTestSupport.SharedPath("models", "configs", "qwen-clip-config.json"));
        Assert.Equal((448, 14, 1664, 48, 16, 8192), (config.ImageSize, config.PatchSize, config.Width, config.Layers, config.Heads, config.MlpSize));
        Assert.Equal((4096, 256, 256, 32), (config.OutputDim, config.NQueries, config.PositionalEmbeddingSize, config.EffectiveResamplerHeads));
        Assert.Equal(1e-6, config.LayerNormEps);
        Assert.False(config.UseOutputProjection);
        Assert.Equal(new VisionOutputDescription(448, 32, 256, 4096), QwenVisionTransformer.DescribeOutput(config));
    }

    [Fact]
    public void ParsesQwenVlVisualSectionWithItsProjection()
    {
        var config = QwenVisionConfig.Parse("""
            {"model_type": "qwen", "hidden_size": 4096, "visual": {"heads": 16, "image_size": 448, "image_start_id": 151857,
             "layers": 48, "mlp_ratio": 4.9231, "output_dim": 4096, "patch_size": 14, "width": 1664}}
            """);
        Assert.Equal(8192, config.MlpSize); // int(1664 * 4.9231)
        Assert.True(config.UseOutputProjection);
        Assert.Equal(256, config.NQueries);
    }

    [Fact]
    public void SaveThenLoadRoundTrips()
    {
        var path = Path.Combine(Path.GetTempPath(), $"qwen-vision-{Guid.NewGuid():N}.json");
        try
        {
            var tiny = QwenVisionConfig.Tiny();
            tiny.Save(path);
            var loaded = QwenVisionConfig.Load(path);
            Assert.Equal((tiny.ImageSize, tiny.Width, tiny.OutputDim, tiny.NQueries, tiny.ResamplerHeads, tiny.PositionalEmbeddingSize),
                (loaded.ImageSize, loaded.Width, loaded.OutputDim, loaded.NQueries, loaded.ResamplerHeads, loaded.PositionalEmbeddingSize));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void RejectsNonSquareQueryCounts()
    {
        var config = QwenVisionConfig.Tiny();
        config.NQueries = 5;
        var error = Assert.Throws<InvalidDataException>(() => config.Validated());
        Assert.Contains("n_queries", error.Message);
    }

    [Fact]
    public void StateDictKeysAreDeepSpeedVisualChatNames()
    {
        using var model = new QwenVisionTransformer(QwenVisionConfig.Tiny());
        var keys = model.state_dict().Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
        Assert.Equal(VisionTestSupport.Strings(VisionTestSupport.Reference.GetProperty("qwen_keys")), keys);
        Assert.Equal(new long[] { 96, 32 }, model.state_dict()["transformer.resblocks.0.attn.in_proj.weight"].shape);
        Assert.Equal(new long[] { 144, 48 }, model.state_dict()["attn_pool.attn.in_proj_weight"].shape);
    }

    [Fact]
    public void OptionalPiecesFollowTheConfig()
    {
        var withProjection = QwenVisionConfig.Tiny();
        withProjection.UseOutputProjection = true;
        using (var model = new QwenVisionTransformer(withProjection))
            Assert.Equal(new long[] { 48, 48 }, model.state_dict()["proj"].shape);

        var sameWidth = QwenVisionConfig.Tiny();
        sameWidth.OutputDim = sameWidth.Width;
        using (var model = new QwenVisionTransformer(sameWidth))
            Assert.DoesNotContain("attn_pool.kv_proj.weight", model.state_dict().Keys);
    }

    [Fact]
    public void MapsOriginalQwenVlKeys()
    {
        Assert.Equal("transformer.resblocks.3.attn.in_proj.weight",
            QwenVisionTransformer.MapQwenVlCheckpointKey("transformer.visual.transformer.resblocks.3.attn.in_proj.weight"));
        Assert.Equal("attn_pool.pos_embed", QwenVisionTransformer.MapQwenVlCheckpointKey("transformer.visual.attn_pool.pos_embed"));
        Assert.Null(QwenVisionTransformer.MapQwenVlCheckpointKey("transformer.h.0.attn.c_attn.weight"));
    }

    [Fact]
    public void ForwardMatchesPythonReference()
    {
        using var scope = NewDisposeScope();
        using var model = new QwenVisionTransformer(QwenVisionConfig.Tiny());
        VisionTestSupport.ApplyFormulaWeights(model, "attn_pool.pos_embed");
        var output = model.Encode(TinyPixels());
        Assert.Equal(new long[] { 2, 4, 48 }, output.shape);
        VisionTestSupport.AssertMatchesSummary(VisionTestSupport.Reference.GetProperty("qwen_output"), output);
    }

    [Fact]
    public void FrozenByDefaultAndUnfreezeKeepsSinCosFixed()
    {
        using var scope = NewDisposeScope();
        using var model = new QwenVisionTransformer(QwenVisionConfig.Tiny());
        Assert.True(model.IsFrozen);
        Assert.False(model.Encode(TinyPixels()).requires_grad);
        model.Unfreeze();
        var trainable = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.requires_grad);
        Assert.False(trainable["attn_pool.pos_embed"]);
        Assert.True(trainable["attn_pool.query"]);
        Assert.True(model.Encode(TinyPixels()).requires_grad);
    }

    [Fact]
    public void VisualAttentionSplitsInProjPerHead()
    {
        using var scope = NewDisposeScope();
        const int width = 8, heads = 2, headDim = 4, length = 3;
        using var attention = new QwenVisualAttention(width, heads);
        VisionTestSupport.ApplyFormulaWeights(attention);
        var state = attention.state_dict();
        var w = ToArray(state["in_proj.weight"]);
        var b = ToArray(state["in_proj.bias"]);
        var wo = ToArray(state["out_proj.weight"]);
        var bo = ToArray(state["out_proj.bias"]);
        var x = VisionTestSupport.FormulaPixels(new long[] { 1, length, width }, 0.3);
        var xs = ToArray(x);

        var actual = ToArray(attention.forward(x));

        // Naive reference: projection row for head h, part p (0 q, 1 k, 2 v), dim d is h*3*headDim + p*headDim + d.
        double Project(int token, int head, int part, int d)
        {
            var row = head * 3 * headDim + part * headDim + d;
            var sum = b[row];
            for (var c = 0; c < width; c++) sum += w[row * width + c] * xs[token * width + c];
            return sum;
        }
        var context = new double[length * width];
        for (var h = 0; h < heads; h++)
        {
            for (var i = 0; i < length; i++)
            {
                var scores = new double[length];
                for (var j = 0; j < length; j++)
                {
                    for (var d = 0; d < headDim; d++) scores[j] += Project(i, h, 0, d) / Math.Sqrt(headDim) * Project(j, h, 1, d);
                }
                var max = scores.Max();
                var exp = scores.Select(s => Math.Exp(s - max)).ToArray();
                var total = exp.Sum();
                for (var d = 0; d < headDim; d++)
                {
                    for (var j = 0; j < length; j++)
                        context[i * width + h * headDim + d] += exp[j] / total * Project(j, h, 2, d);
                }
            }
        }

        for (var i = 0; i < length; i++)
        {
            for (var o = 0; o < width; o++)
            {
                var expected = bo[o];
                for (var c = 0; c < width; c++) expected += wo[o * width + c] * context[i * width + c];
                Assert.Equal(expected, actual[i * width + o], 1e-5);
            }
        }
    }

    [Fact]
    public void PackedMultiheadAttentionMatchesNaiveCrossAttention()
    {
        using var scope = NewDisposeScope();
        const int embed = 8, heads = 2, headDim = 4, queries = 2, keys = 5;
        using var attention = new PackedMultiheadAttention(embed, heads);
        VisionTestSupport.ApplyFormulaWeights(attention);
        var state = attention.state_dict();
        var w = ToArray(state["in_proj_weight"]);
        var b = ToArray(state["in_proj_bias"]);
        var wo = ToArray(state["out_proj.weight"]);
        var bo = ToArray(state["out_proj.bias"]);
        var q = VisionTestSupport.FormulaPixels(new long[] { 1, queries, embed }, 0.1);
        var k = VisionTestSupport.FormulaPixels(new long[] { 1, keys, embed }, 0.7);
        var v = VisionTestSupport.FormulaPixels(new long[] { 1, keys, embed }, 1.9);
        var (qs, ks, vs) = (ToArray(q), ToArray(k), ToArray(v));
        var actual = ToArray(attention.forward(q, k, v));

        // nn.MultiheadAttention: rows [0,E) project q, [E,2E) k, [2E,3E) v; head h owns dims [h*hd, (h+1)*hd).
        double Project(double[] input, int token, int block, int dim)
        {
            var row = block * embed + dim;
            var sum = b[row];
            for (var c = 0; c < embed; c++) sum += w[row * embed + c] * input[token * embed + c];
            return sum;
        }
        var context = new double[queries * embed];
        for (var h = 0; h < heads; h++)
        {
            for (var i = 0; i < queries; i++)
            {
                var scores = new double[keys];
                for (var j = 0; j < keys; j++)
                {
                    for (var d = 0; d < headDim; d++)
                        scores[j] += Project(qs, i, 0, h * headDim + d) * Project(ks, j, 1, h * headDim + d) / Math.Sqrt(headDim);
                }

                var exp = scores.Select(s => Math.Exp(s - scores.Max())).ToArray();
                for (var d = 0; d < headDim; d++)
                {
                    for (var j = 0; j < keys; j++)
                        context[i * embed + h * headDim + d] += exp[j] / exp.Sum() * Project(vs, j, 2, h * headDim + d);
                }
            }
        }

        for (var i = 0; i < queries; i++)
        {
            for (var o = 0; o < embed; o++)
            {
                var expected = bo[o];
                for (var c = 0; c < embed; c++) expected += wo[o * embed + c] * context[i * embed + c];
                Assert.Equal(expected, actual[i * embed + o], 1e-5);
            }
        }
    }

    [Fact]
    public void SinCosTableMatchesNumpyReference()
    {
        using var scope = NewDisposeScope();
        var expected = VisionTestSupport.Floats(VisionTestSupport.Reference.GetProperty("sincos_8x3"));
        var actual = VisionPositionalEmbeddings.Get2dSinCos(8, 3);
        Assert.Equal(new long[] { 9, 8 }, actual.shape);
        var values = actual.data<float>().ToArray();
        for (var i = 0; i < expected.Length; i++) Assert.Equal(expected[i], values[i], 1e-5);

        // Row 5 of a 3x3 grid is (row 1, column 2): the first half encodes the column (np.meshgrid(w, h)).
        Assert.Equal(MathF.Sin(2f), values[5 * 8 + 0], 1e-5);
        Assert.Equal(MathF.Sin(1f), values[5 * 8 + 4], 1e-5);

        var large = VisionPositionalEmbeddings.Get2dSinCos(4096, 16).data<float>().ToArray();
        foreach (var pick in VisionTestSupport.Reference.GetProperty("sincos_4096x16_picks").EnumerateArray())
            Assert.Equal(pick[2].GetDouble(), large[pick[0].GetInt32() * 4096 + pick[1].GetInt32()], 1e-4);
    }

    [Fact]
    public void AbsolutePositionsInterpolateBicubicallyLikeQwen()
    {
        using var scope = NewDisposeScope();
        var reference = VisionTestSupport.Reference;
        var table = tensor(VisionTestSupport.Floats(reference.GetProperty("abs_pos_table_4x6"))).reshape(4, 6);
        foreach (var (targetTokens, name) in new[] { (16, "abs_pos_to_16"), (9, "abs_pos_to_9") })
        {
            var resized = VisionPositionalEmbeddings.GetAbsPos(table, targetTokens);
            Assert.Equal(new long[] { targetTokens, 6 }, resized.shape);
            var expected = VisionTestSupport.Floats(reference.GetProperty(name));
            var actual = resized.data<float>().ToArray();
            for (var i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 1e-5);
        }
        Assert.True(VisionPositionalEmbeddings.GetAbsPos(table, 4).allclose(table, rtol: 0, atol: 0));
    }

    private static double[] ToArray(Tensor t) => t.detach().to(ScalarType.Float64).reshape(-1).data<double>().ToArray();
}
