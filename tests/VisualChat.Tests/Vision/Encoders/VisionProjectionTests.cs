using TorchSharp;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Projection;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Encoders;

public class VisionProjectionTests
{
    private static string[] SortedKeys(nn.Module module) =>
        module.state_dict().Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();

    [Fact]
    public void BaselineIsLinearThenLayerNormUnderSequentialNames()
    {
        using var scope = NewDisposeScope();
        var projection = (BaselineProjection)ProjectionFactory.Create("baseline", 32, 24);
        Assert.Equal(new[] { "0.bias", "0.weight", "1.bias", "1.weight" }, SortedKeys(projection));
        Assert.Equal(new long[] { 24, 32 }, projection.state_dict()["0.weight"].shape);
        VisionTestSupport.ApplyFormulaWeights(projection);

        var features = VisionTestSupport.FormulaPixels(new long[] { 2, 17, 32 }, 0.2);
        var output = projection.Project(features);
        var state = projection.state_dict();
        var expected = nn.functional.layer_norm(nn.functional.linear(features, state["0.weight"], state["0.bias"]),
            new long[] { 24 }, state["1.weight"], state["1.bias"], 1e-12);
        Assert.Equal(new long[] { 2, 17, 24 }, output.shape);
        Assert.True(output.allclose(expected, rtol: 0, atol: 1e-5));
        Assert.Equal(257, projection.OutputTokens(257));
        Assert.True(output.requires_grad); // projections are what DSVC trains
    }

    [Fact]
    public void VitAddsOneClipLayerBeforeTheProjection()
    {
        using var scope = NewDisposeScope();
        var options = new ProjectionOptions(VitLayerConfig: ClipVisionConfig.Tiny());
        var projection = (VitProjection)ProjectionFactory.Create(ProjectionKind.Vit, 32, 24, options);
        var expected = new List<string>();
        foreach (var proj in new[] { "k_proj", "out_proj", "q_proj", "v_proj" })
            expected.AddRange(new[] { $"vis_layer.self_attn.{proj}.bias", $"vis_layer.self_attn.{proj}.weight" });
        expected.AddRange(new[]
        {
            "projection.0.bias", "projection.0.weight", "projection.1.bias", "projection.1.weight",
            "vis_layer.layer_norm1.bias", "vis_layer.layer_norm1.weight", "vis_layer.layer_norm2.bias", "vis_layer.layer_norm2.weight",
            "vis_layer.mlp.fc1.bias", "vis_layer.mlp.fc1.weight", "vis_layer.mlp.fc2.bias", "vis_layer.mlp.fc2.weight",
        });
        Assert.Equal(expected.OrderBy(k => k, StringComparer.Ordinal).ToArray(), SortedKeys(projection));
        Assert.Equal(new long[] { 24, 32 }, projection.state_dict()["projection.0.weight"].shape);
        Assert.Equal(new long[] { 24 }, projection.state_dict()["projection.1.weight"].shape);

        var output = projection.Project(VisionTestSupport.FormulaPixels(new long[] { 2, 17, 32 }, 0.2));
        Assert.Equal(new long[] { 2, 17, 24 }, output.shape);
        Assert.Throws<ArgumentException>(() => ProjectionFactory.Create("vit", 32, 24));
    }

    [Fact]
    public void PerceiverTurnsClsPlusGridIntoFixedQueries()
    {
        using var scope = NewDisposeScope();
        var options = new ProjectionOptions(PerceiverGridSize: 2, PerceiverHeads: 2);
        var projection = (PerceiverProjection)ProjectionFactory.Create(ProjectionKind.Perceiver, 32, 24, options);
        Assert.Equal(new[]
        {
            "attn.in_proj_bias", "attn.in_proj_weight", "attn.out_proj.bias", "attn.out_proj.weight",
            "kv_proj.bias", "kv_proj.weight", "ln_kv.bias", "ln_kv.weight", "ln_q.bias", "ln_q.weight", "pos_embed",
            "projection.0.bias", "projection.0.weight", "projection.1.bias", "projection.1.weight", "query",
        }, SortedKeys(projection));
        Assert.Equal(new long[] { 24 }, projection.state_dict()["projection.0.weight"].shape); // LayerNorm first
        Assert.Equal(new long[] { 24, 24 }, projection.state_dict()["projection.1.weight"].shape);
        Assert.False(projection.named_parameters().Single(p => p.name == "pos_embed").parameter.requires_grad);

        VisionTestSupport.ApplyFormulaWeights(projection, "pos_embed");
        var features = VisionTestSupport.FormulaPixels(new long[] { 2, 17, 32 }, 0.2);
        var output = projection.Project(features);
        Assert.Equal(new long[] { 2, 4, 24 }, output.shape);

        // The first token is treated as CLS and ignored; patch tokens matter.
        var otherCls = features.clone();
        otherCls.narrow(1, 0, 1).add_(5);
        Assert.True(projection.Project(otherCls).allclose(output, rtol: 0, atol: 1e-6));
        var otherPatch = features.clone();
        otherPatch.narrow(1, 3, 1).mul_(-3);
        Assert.False(projection.Project(otherPatch).allclose(output, rtol: 0, atol: 1e-4));

        Assert.Equal(4, projection.OutputTokens(577));
        var error = Assert.Throws<ArgumentException>(() => projection.Project(VisionTestSupport.FormulaPixels(new long[] { 1, 16, 32 }, 0)));
        Assert.Contains("CLS", error.Message);
    }

    [Fact]
    public void DefaultPerceiverUsesDsvcSizes()
    {
        using var scope = NewDisposeScope();
        var projection = (PerceiverProjection)ProjectionFactory.Create("perceiver", 64, 256);
        Assert.Equal(256, projection.NumQueries);
        Assert.Equal(256, projection.OutputTokens(257));
        Assert.Equal(new long[] { 768, 256 }, projection.state_dict()["attn.in_proj_weight"].shape);
    }

    [Fact]
    public void FactoryNamesItsChoices()
    {
        Assert.Equal(ProjectionKind.Perceiver, ProjectionFactory.ParseKind(" Perceiver "));
        var error = Assert.Throws<ArgumentException>(() => ProjectionFactory.ParseKind("resampler"));
        Assert.Contains("baseline, vit, perceiver or mlp2x_gelu", error.Message);
        var projection = ProjectionFactory.Create("baseline", 16, 8);
        Assert.Equal((ProjectionKind.Baseline, 16, 8), (projection.Kind, projection.InputWidth, projection.OutputWidth));
    }
}
