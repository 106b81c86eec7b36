using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Projection;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Encoders;

/// <summary>
/// The perceiver and ViT projections against a reference written here from primitive ops (matmul, softmax, a
/// hand-written LayerNorm) over the modules' own state dicts, following DSVC's VisProjection_perceiver /
/// VisProjection_vit and HF's CLIPEncoderLayer. Weights are formula values, so every tensor matters.
/// </summary>
public class ProjectionReferenceTests
{
    static Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, double eps)
    {
        var mean = x.mean(new long[] { -1 }, keepdim: true);
        var centered = x - mean;
        var variance = (centered * centered).mean(new long[] { -1 }, keepdim: true);
        return centered / (variance + eps).sqrt() * weight + bias;
    }

    static Tensor Linear(Tensor x, Tensor weight, Tensor bias) => x.matmul(weight.t()) + bias;

    /// <summary>Multi-head scaled dot-product attention over [B, L, C] projections already computed.</summary>
    static Tensor Attention(Tensor q, Tensor k, Tensor v, int heads)
    {
        long b = q.shape[0], lq = q.shape[1], lk = k.shape[1], c = q.shape[2], d = c / heads;
        Tensor Split(Tensor t, long l) => t.reshape(b, l, heads, d).transpose(1, 2);
        var scores = Split(q, lq).matmul(Split(k, lk).transpose(-1, -2)) / Math.Sqrt(d);
        var context = scores.softmax(-1).matmul(Split(v, lk));
        return context.transpose(1, 2).reshape(b, lq, c);
    }

    static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double gap = (expected - actual).abs().max().item<float>();
        double scale = expected.abs().max().item<float>();
        Assert.True(gap < 2e-5 * Math.Max(1, scale), $"{what}: max |reference − module| = {gap} (max |reference| = {scale})");
    }

    [Fact]
    public void PerceiverMatchesAPrimitiveReference()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        const int heads = 2, grid = 4;
        var projection = (PerceiverProjection)ProjectionFactory.Create(ProjectionKind.Perceiver, 32, 24, new ProjectionOptions(PerceiverGridSize: grid, PerceiverHeads: heads));
        VisionTestSupport.ApplyFormulaWeights(projection, "pos_embed");
        var s = projection.state_dict();
        var features = VisionTestSupport.FormulaPixels(new long[] { 2, 1 + grid * grid, 32 }, 0.2);

        // DSVC: x = x[:, 1:]; kv = ln_kv(kv_proj(x)); q = ln_q(query) + pos_embed;
        // attn(q, kv + pos_embed (same grid: no resize), kv); projection = LayerNorm then Linear.
        var posEmbed = s["pos_embed"];
        var kv = LayerNorm(Linear(features.narrow(1, 1, grid * grid), s["kv_proj.weight"], s["kv_proj.bias"]), s["ln_kv.weight"], s["ln_kv.bias"], 1e-12);
        var q = (LayerNorm(s["query"], s["ln_q.weight"], s["ln_q.bias"], 1e-12) + posEmbed).unsqueeze(0).expand(2, -1, -1);
        var inW = s["attn.in_proj_weight"].chunk(3, 0);
        var inB = s["attn.in_proj_bias"].chunk(3, 0);
        var attended = Attention(Linear(q, inW[0], inB[0]), Linear(kv + posEmbed, inW[1], inB[1]), Linear(kv, inW[2], inB[2]), heads);
        attended = Linear(attended, s["attn.out_proj.weight"], s["attn.out_proj.bias"]);
        var expected = Linear(LayerNorm(attended, s["projection.0.weight"], s["projection.0.bias"], 1e-12), s["projection.1.weight"], s["projection.1.bias"]);

        AssertClose(expected, projection.Project(features), "perceiver");
    }

    [Fact]
    public void VitMatchesAPrimitiveReference()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var layerConfig = ClipVisionConfig.Tiny();
        var projection = (VitProjection)ProjectionFactory.Create(ProjectionKind.Vit, 32, 24, new ProjectionOptions(VitLayerConfig: layerConfig));
        VisionTestSupport.ApplyFormulaWeights(projection);
        var s = projection.state_dict();
        var x = VisionTestSupport.FormulaPixels(new long[] { 2, 17, 32 }, 0.2);
        double eps = layerConfig.LayerNormEps;
        int heads = layerConfig.NumAttentionHeads;
        Assert.Equal("quick_gelu", layerConfig.HiddenAct);

        // HF CLIPEncoderLayer (pre-norm): h = x + out(attn(ln1(x))); h + fc2(quick_gelu(fc1(ln2(h)))).
        Tensor P(string name, Tensor input) => Linear(input, s[$"vis_layer.{name}.weight"], s[$"vis_layer.{name}.bias"]);
        var normed = LayerNorm(x, s["vis_layer.layer_norm1.weight"], s["vis_layer.layer_norm1.bias"], eps);
        var h = x + P("self_attn.out_proj", Attention(P("self_attn.q_proj", normed), P("self_attn.k_proj", normed), P("self_attn.v_proj", normed), heads));
        var hidden = P("mlp.fc1", LayerNorm(h, s["vis_layer.layer_norm2.weight"], s["vis_layer.layer_norm2.bias"], eps));
        h = h + P("mlp.fc2", hidden * (hidden * 1.702).sigmoid());
        // DSVC VisProjection_vit: Sequential(Linear, LayerNorm(eps 1e-12)).
        var expected = LayerNorm(Linear(h, s["projection.0.weight"], s["projection.0.bias"]), s["projection.1.weight"], s["projection.1.bias"], 1e-12);

        AssertClose(expected, projection.Project(x), "vit");
    }
}
