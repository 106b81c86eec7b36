using TorchSharp;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Encoders;

public class ClipVisionModelTests
{
    private static readonly long[] TinyPixelShape = { 2, 3, 32, 32 };

    [Fact]
    public void StateDictKeysAreHuggingFaceNames()
    {
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        var keys = model.state_dict().Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
        var expected = VisionTestSupport.Strings(VisionTestSupport.Reference.GetProperty("clip_keys"));
        Assert.Equal(expected, keys);
        Assert.Contains("vision_model.pre_layrnorm.weight", keys);
        Assert.Contains("vision_model.encoder.layers.1.self_attn.out_proj.bias", keys);
        Assert.DoesNotContain(keys, k => k.Contains("position_ids"));
        // HF registers position_ids with persistent=False: present on the module, absent from state_dict().
        var embeddings = model.named_modules().Single(m => m.name == "vision_model.embeddings").module;
        Assert.True(embeddings.has_buffer("position_ids"));
        Assert.Equal(Enumerable.Range(0, 17).Select(i => (long)i).ToArray(), embeddings.get_buffer("position_ids")!.data<long>().ToArray());
    }

    [Fact]
    public void StateDictShapesFollowTheConfig()
    {
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        var state = model.state_dict();
        Assert.Equal(new long[] { 32 }, state["vision_model.embeddings.class_embedding"].shape);
        Assert.Equal(new long[] { 32, 3, 8, 8 }, state["vision_model.embeddings.patch_embedding.weight"].shape);
        Assert.Equal(new long[] { 17, 32 }, state["vision_model.embeddings.position_embedding.weight"].shape);
        Assert.Equal(new long[] { 64, 32 }, state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape);
        Assert.DoesNotContain("vision_model.embeddings.patch_embedding.bias", state.Keys);
    }

    [Fact]
    public void DescribeOutputGivesPresetShapesWithoutBuildingThem()
    {
        Assert.Equal(new VisionOutputDescription(224, 16, 257, 1024), ClipVisionModel.DescribeOutput(ClipVisionConfig.ClipVitLargePatch14()));
        Assert.Equal(new VisionOutputDescription(336, 24, 577, 1024), ClipVisionModel.DescribeOutput(ClipVisionConfig.ClipVitLargePatch14_336()));
        Assert.Equal(576, ClipVisionModel.DescribeOutput(ClipVisionConfig.ClipVitLargePatch14_336(), VisionFeatureSelect.PenultimateLayer, dropClsToken: true).OutputTokens);
        Assert.Equal(1, ClipVisionModel.DescribeOutput(ClipVisionConfig.ClipVitLargePatch14(), VisionFeatureSelect.PooledOutput).OutputTokens);
    }

    [Theory]
    [InlineData(VisionFeatureSelect.LastHiddenState, false, 17)]
    [InlineData(VisionFeatureSelect.PenultimateLayer, true, 16)]
    [InlineData(VisionFeatureSelect.PenultimateLayer, false, 17)]
    [InlineData(VisionFeatureSelect.PooledOutput, false, 1)]
    public void TinyEncodeShapesMatchDescription(VisionFeatureSelect select, bool dropCls, int tokens)
    {
        using var scope = NewDisposeScope();
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny(), select, dropCls);
        var features = model.Encode(VisionTestSupport.FormulaPixels(TinyPixelShape, 0));
        Assert.Equal(new long[] { 2, tokens, 32 }, features.shape);
        Assert.Equal(tokens, model.OutputTokens);
        Assert.Equal(32, model.OutputWidth);
        Assert.Equal(32, model.ImageSize);
    }

    [Fact]
    public void ForwardMatchesPythonReference()
    {
        using var scope = NewDisposeScope();
        var reference = VisionTestSupport.Reference;
        var pixels = VisionTestSupport.FormulaPixels(TinyPixelShape, 0);

        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        VisionTestSupport.ApplyFormulaWeights(model);
        var (last, pooled) = model.ForwardFull(pixels);
        VisionTestSupport.AssertMatchesSummary(reference.GetProperty("clip_last_hidden_state"), last);
        VisionTestSupport.AssertMatchesSummary(reference.GetProperty("clip_pooled"), pooled);
        VisionTestSupport.AssertMatchesSummary(reference.GetProperty("clip_last_hidden_state"), model.Encode(pixels));

        using var penultimate = new ClipVisionModel(ClipVisionConfig.Tiny(), VisionFeatureSelect.PenultimateLayer);
        VisionTestSupport.ApplyFormulaWeights(penultimate);
        VisionTestSupport.AssertMatchesSummary(reference.GetProperty("clip_penultimate"), penultimate.Encode(pixels));
        using var pooledModel = new ClipVisionModel(ClipVisionConfig.Tiny(), VisionFeatureSelect.PooledOutput);
        VisionTestSupport.ApplyFormulaWeights(pooledModel);
        Assert.True(pooledModel.Encode(pixels).squeeze(1).allclose(pooled, rtol: 0, atol: 1e-6));
    }

    [Fact]
    public void GeluConfigMatchesPythonReference()
    {
        using var scope = NewDisposeScope();
        var config = ClipVisionConfig.Tiny();
        config.HiddenAct = "gelu";
        using var model = new ClipVisionModel(config);
        VisionTestSupport.ApplyFormulaWeights(model);
        var last = model.Encode(VisionTestSupport.FormulaPixels(TinyPixelShape, 0));
        VisionTestSupport.AssertMatchesSummary(VisionTestSupport.Reference.GetProperty("clip_last_hidden_state_gelu"), last);
    }

    [Fact]
    public void ActivationsFollowTheirFormulas()
    {
        using var scope = NewDisposeScope();
        var xs = new[] { -3.0f, -1.0f, -0.25f, 0f, 0.5f, 2.0f };
        var quick = VisionActivations.QuickGelu(tensor(xs)).data<float>().ToArray();
        var gelu = VisionActivations.Gelu(tensor(xs)).data<float>().ToArray();
        for (var i = 0; i < xs.Length; i++)
        {
            var x = (double)xs[i];
            Assert.Equal(x / (1 + Math.Exp(-1.702 * x)), quick[i], 1e-5);
            Assert.Equal(0.5 * x * (1 + Erf(x / Math.Sqrt(2))), gelu[i], 1e-5);
        }
        Assert.NotEqual(quick[4], gelu[4], 3);
    }

    [Fact]
    public void EncodersStartFrozenAndLeaveNoGraph()
    {
        using var scope = NewDisposeScope();
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        Assert.True(model.IsFrozen);
        Assert.All(model.parameters(), p => Assert.False(p.requires_grad));
        var features = model.Encode(VisionTestSupport.FormulaPixels(TinyPixelShape, 0));
        Assert.False(features.requires_grad);

        model.Unfreeze();
        Assert.False(model.IsFrozen);
        var trainable = model.Encode(VisionTestSupport.FormulaPixels(TinyPixelShape, 0));
        Assert.True(trainable.requires_grad);
        model.Freeze();
        Assert.False(model.Encode(VisionTestSupport.FormulaPixels(TinyPixelShape, 0)).requires_grad);
    }

    [Fact]
    public void RejectsWrongImageSizeNamingTheExpectedShape()
    {
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        using var pixels = zeros(1, 3, 40, 40);
        var error = Assert.Throws<ArgumentException>(() => model.Encode(pixels));
        Assert.Contains("[N, C, 32, 32]", error.Message);
    }

    // Abramowitz–Stegun 7.1.26 is too coarse; a series is exact enough for |x| <= 3.
    private static double Erf(double x)
    {
        double sum = 0, term = x;
        for (var n = 0; n < 60; n++)
        {
            sum += term / (2 * n + 1);
            term *= -x * x / (n + 1);
        }
        return 2 / Math.Sqrt(Math.PI) * sum;
    }
}
