using TorchSharp;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Model;

public class LlamaModuleTests
{
    static IEnumerable<string> ExpectedKeys(int layers, bool tied, bool bias)
    {
        yield return "model.embed_tokens.weight";
        for (int i = 0; i < layers; i++) {
            foreach (var p in new[] { "q", "k", "v", "o" }) {
                yield return $"model.layers.{i}.self_attn.{p}_proj.weight";
                if (bias) yield return $"model.layers.{i}.self_attn.{p}_proj.bias";
            }
            foreach (var p in new[] { "gate", "up", "down" }) yield return $"model.layers.{i}.mlp.{p}_proj.weight";
            yield return $"model.layers.{i}.input_layernorm.weight";
            yield return $"model.layers.{i}.post_attention_layernorm.weight";
        }
        yield return "model.norm.weight";
        if (!tied) yield return "lm_head.weight";
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void StateDictKeysAreHfLlamaKeys(bool tied, bool bias)
    {
        using var model = new LlamaForCausalLM(LlamaTestModels.Tiny(tied, attentionBias: bias), seed: 1);
        var keys = model.state_dict().Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
        var expected = ExpectedKeys(2, tied, bias).OrderBy(k => k, StringComparer.Ordinal).ToArray();
        Assert.Equal(expected, keys);
        Assert.DoesNotContain(model.named_parameters(), p => p.name.Contains("inv_freq"));
        Assert.DoesNotContain(keys, k => k.Contains("inv_freq"));
    }

    [Fact]
    public void TiedHeadUsesEmbeddingWeights()
    {
        using var scope = NewDisposeScope();
        using var model = new LlamaForCausalLM(LlamaTestModels.Tiny(tied: true), seed: 1);
        Assert.Null(model.lm_head);
        var ids = tensor(new long[] { 3, 9, 27 }).unsqueeze(0);
        var before = model.forward(new CausalLMInput(InputIds: ids)).Logits;
        using (no_grad()) model.model.embed_tokens.weight!.select(0, 5).add_(1.0f);
        var after = model.forward(new CausalLMInput(InputIds: ids)).Logits;
        var changed = (after - before).abs().amax(new long[] { 0, 1 });
        Assert.True(changed[5].item<float>() > 1e-3f);
        Assert.Equal(0f, changed[6].item<float>());
    }

    [Fact]
    public void SeededInitIsReproducibleAndHfLike()
    {
        using var a = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 7);
        using var b = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 7);
        using var c = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 8);
        var sa = a.state_dict(); var sb = b.state_dict(); var sc = c.state_dict();
        Assert.Equal(0f, LlamaTestModels.MaxAbsDiff(sa["model.layers.1.mlp.up_proj.weight"], sb["model.layers.1.mlp.up_proj.weight"]));
        Assert.True(LlamaTestModels.MaxAbsDiff(sa["model.layers.1.mlp.up_proj.weight"], sc["model.layers.1.mlp.up_proj.weight"]) > 1e-3f);
        Assert.Equal(1f, sa["model.norm.weight"].min().item<float>());
        var std = sa["model.embed_tokens.weight"].std().item<float>();
        Assert.InRange(std, 0.018f, 0.022f);
    }

    [Fact]
    public void GroupedQueryAttentionShapes()
    {
        using var scope = NewDisposeScope();
        var config = LlamaTestModels.Tiny();
        using var model = new LlamaForCausalLM(config, seed: 1);
        var attention = model.model.layers[0].self_attn;
        Assert.Equal(new long[] { 64, 64 }, attention.q_proj.Weight().shape);
        Assert.Equal(new long[] { 32, 64 }, attention.k_proj.Weight().shape);   // 2 KV heads × 16
        Assert.Equal(new long[] { 32, 64 }, attention.v_proj.Weight().shape);
        Assert.Equal(new long[] { 64, 64 }, attention.o_proj.Weight().shape);
        var output = model.forward(new CausalLMInput(InputIds: randint(0, 128, new long[] { 3, 5 }), OutputHiddenStates: true));
        Assert.Equal(new long[] { 3, 5, 128 }, output.Logits.shape);
        Assert.Equal(new long[] { 3, 5, 64 }, output.LastHiddenState!.shape);

        // Each KV head serves consecutive query heads, as HF repeat_kv.
        var kv = arange(2 * 3 * 2, dtype: ScalarType.Float32).view(1, 2, 3, 2);
        var repeated = LlamaAttention.RepeatKeyValue(kv, 2);
        Assert.Equal(new long[] { 1, 4, 3, 2 }, repeated.shape);
        Assert.Equal(0f, LlamaTestModels.MaxAbsDiff(repeated.select(1, 1), kv.select(1, 0)));
        Assert.Equal(0f, LlamaTestModels.MaxAbsDiff(repeated.select(1, 2), kv.select(1, 1)));
    }

    [Fact]
    public void RmsNormMatchesHandReference()
    {
        using var scope = NewDisposeScope();
        using var norm = new LlamaRMSNorm(4, 1e-5);
        using (no_grad()) norm.weight.copy_(tensor(new float[] { 1f, 2f, 0.5f, -1f }));
        var x = tensor(new float[] { 1, -2, 3, 0.5f, 0.1f, 0.2f, -0.3f, 4 }).view(2, 4);
        var actual = norm.forward(x).data<float>().ToArray();
        var w = new[] { 1f, 2f, 0.5f, -1f };
        var input = new[] { 1, -2, 3, 0.5f, 0.1f, 0.2f, -0.3f, 4 };
        for (int row = 0; row < 2; row++) {
            double meanSquare = 0;
            for (int i = 0; i < 4; i++) meanSquare += input[row * 4 + i] * (double)input[row * 4 + i] / 4;
            for (int i = 0; i < 4; i++)
                Assert.Equal(w[i] * input[row * 4 + i] / Math.Sqrt(meanSquare + 1e-5), actual[row * 4 + i], 5);
        }
        // bf16 module and input: variance in fp32, result in bf16.
        var fp32 = norm.forward(x);
        norm.to(ScalarType.BFloat16);
        var half = norm.forward(x.to(ScalarType.BFloat16));
        Assert.Equal(ScalarType.BFloat16, half.dtype);
        Assert.True(LlamaTestModels.MaxAbsDiff(half, fp32) < 0.05f);
    }

    /// <summary>cos/sin of position p, frequency index j (j &lt; D/2, duplicated into the second half), computed directly.</summary>
    static (double cos, double sin) Rope(double position, int j, int dim, double theta) =>
        (Math.Cos(position / Math.Pow(theta, 2.0 * j / dim)), Math.Sin(position / Math.Pow(theta, 2.0 * j / dim)));

    [Theory]
    [InlineData("default", 1.0, 0.0)]
    [InlineData("linear", 4.0, 0.0)]
    [InlineData("dynamic", 2.0, 0.0)]
    public void RotaryEmbeddingMatchesHandReference(string kind, double factor, double unused)
    {
        _ = unused;
        using var scope = NewDisposeScope();
        var config = LlamaTestModels.Tiny(ropeScaling: kind == "default" ? null : new RopeScalingConfig { Type = kind, Factor = factor });
        using var rope = new LlamaRotaryEmbedding(config);
        int dim = config.HeadDim;
        long[] positions = { 0, 1, 5, 11 };   // 11 ≥ max_position_embeddings (8): dynamic scaling kicks in
        var (cos, sin) = rope.forward(zeros(1, dtype: ScalarType.Float32), tensor(positions).unsqueeze(0));
        Assert.Equal(new long[] { 1, 4, dim }, cos.shape);
        double theta = config.RopeTheta;
        if (kind == "dynamic") {
            long seqLen = 12;
            theta *= Math.Pow(factor * seqLen / config.MaxPositionEmbeddings - (factor - 1), dim / (dim - 2.0));
        }
        var c = cos.data<float>().ToArray();
        var s = sin.data<float>().ToArray();
        for (int p = 0; p < positions.Length; p++)
        {
            for (int i = 0; i < dim; i++) {
                double position = kind == "linear" ? positions[p] / factor : positions[p];
                var (ec, es) = Rope(position, i % (dim / 2), dim, theta);
                Assert.True(Math.Abs(ec - c[p * dim + i]) < 1e-5, $"cos p={positions[p]} i={i}: {c[p * dim + i]} vs {ec}");
                Assert.True(Math.Abs(es - s[p * dim + i]) < 1e-5, $"sin p={positions[p]} i={i}: {s[p * dim + i]} vs {es}");
            }
        }
    }

    [Fact]
    public void DynamicScalingLeavesShortSequencesAlone()
    {
        using var scope = NewDisposeScope();
        using var plain = new LlamaRotaryEmbedding(LlamaTestModels.Tiny());
        using var dynamic = new LlamaRotaryEmbedding(LlamaTestModels.Tiny(ropeScaling: new RopeScalingConfig { Type = "dynamic", Factor = 2 }));
        var positions = arange(8, dtype: ScalarType.Int64).unsqueeze(0);
        var x = zeros(1);
        Assert.Equal(0f, LlamaTestModels.MaxAbsDiff(plain.forward(x, positions).cos, dynamic.forward(x, positions).cos));
    }

    [Fact]
    public void Llama3ScalingKeepsHighFrequenciesAndScalesLowOnes()
    {
        using var scope = NewDisposeScope();
        var config = LlamaTestModels.Tiny(ropeScaling: new RopeScalingConfig {
            RopeType = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 64 });
        using var scaled = new LlamaRotaryEmbedding(config);
        var freqs = scaled.InverseFrequency;
        var plain = LlamaRotaryEmbedding.InverseFrequencies(config.HeadDim, config.RopeTheta);
        for (int j = 0; j < plain.Length; j++) {
            double wavelen = 2 * Math.PI / plain[j];
            if (wavelen < 64 / 4.0) Assert.Equal(plain[j], freqs[j], 6);
            else if (wavelen > 64 / 1.0) Assert.Equal(plain[j] / 8, freqs[j], 6);
            else Assert.InRange(freqs[j], plain[j] / 8 - 1e-7, plain[j] + 1e-7);
        }
        // Middle band (16 ≤ wavelength ≤ 64 here: pairs 1 and 2 of head_dim 16), values worked out by hand from Meta's
        // apply_scaling: smooth = (64/λ − 1)/(4 − 1), f' = (1 − smooth)·f/8 + smooth·f.
        //   pair 1: f = 10000^(−2/16) = 0.316228, λ = 19.8692, smooth = 0.740357 → 0.2443845994
        //   pair 2: f = 0.1, λ = 62.8319, smooth = 0.0061972 → 0.01304225604
        Assert.Equal(16, config.HeadDim);
        Assert.True(Math.Abs(freqs[1] / 0.2443845994 - 1) < 1e-6, $"middle-band pair 1: {freqs[1]}, expected 0.2443845994");
        Assert.True(Math.Abs(freqs[2] / 0.01304225604 - 1) < 1e-6, $"middle-band pair 2: {freqs[2]}, expected 0.01304225604");
    }

    [Fact]
    public void RotateHalfAndApplyMatchHfFormula()
    {
        using var scope = NewDisposeScope();
        var x = tensor(new float[] { 1, 2, 3, 4 }).view(1, 1, 1, 4);
        Assert.Equal(new float[] { -3, -4, 1, 2 }, LlamaRotaryEmbedding.RotateHalf(x).data<float>().ToArray());
        double angle0 = 0.3, angle1 = 1.1;
        var cos = tensor(new[] { (float)Math.Cos(angle0), (float)Math.Cos(angle1), (float)Math.Cos(angle0), (float)Math.Cos(angle1) }).view(1, 1, 4);
        var sin = tensor(new[] { (float)Math.Sin(angle0), (float)Math.Sin(angle1), (float)Math.Sin(angle0), (float)Math.Sin(angle1) }).view(1, 1, 4);
        var (q, _) = LlamaRotaryEmbedding.ApplyRotaryPosEmb(x, x, cos, sin);
        var r = q.data<float>().ToArray();
        // Pairs (x_j, x_{j+D/2}) rotate by angle_j.
        Assert.Equal(1 * Math.Cos(angle0) - 3 * Math.Sin(angle0), r[0], 5);
        Assert.Equal(2 * Math.Cos(angle1) - 4 * Math.Sin(angle1), r[1], 5);
        Assert.Equal(3 * Math.Cos(angle0) + 1 * Math.Sin(angle0), r[2], 5);
        Assert.Equal(4 * Math.Cos(angle1) + 2 * Math.Sin(angle1), r[3], 5);
    }

    [Fact]
    public void InputsEmbedsEqualsInputIds()
    {
        using var scope = NewDisposeScope();
        using var model = new LlamaForCausalLM(LlamaTestModels.Tiny(), seed: 3);
        var ids = tensor(new long[] { 1, 7, 99, 4 }).unsqueeze(0);
        var fromIds = model.forward(new CausalLMInput(InputIds: ids)).Logits;
        var fromEmbeds = model.forward(new CausalLMInput(InputsEmbeds: model.Embed(ids))).Logits;
        Assert.Equal(0f, LlamaTestModels.MaxAbsDiff(fromIds, fromEmbeds));
        Assert.Throws<ArgumentException>(() => model.forward(new CausalLMInput()));
    }

    [Fact]
    public void Bf16ForwardIsCloseToFp32()
    {
        using var scope = NewDisposeScope();
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny());
        var ids = tensor(new long[] { 1, 5, 77, 3, 100, 42 }).unsqueeze(0);
        var fp32 = model.forward(new CausalLMInput(InputIds: ids)).Logits;
        model.to(ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, model.model.layers[1].mlp.up_proj.Weight().dtype);
        var bf16 = model.forward(new CausalLMInput(InputIds: ids)).Logits;
        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
        Assert.True(LlamaTestModels.MaxAbsDiff(fp32, bf16) < 0.1f, $"bf16 differs by {LlamaTestModels.MaxAbsDiff(fp32, bf16)}");
        Assert.True((fp32 - bf16.to(ScalarType.Float32)).abs().mean().item<float>() < 0.02f);
        model.to(ScalarType.Float16);
        var fp16 = model.forward(new CausalLMInput(InputIds: ids)).Logits;
        Assert.True(LlamaTestModels.MaxAbsDiff(fp32, fp16) < 0.02f);
    }

    [Fact]
    public void ComputeDTypePolicy()
    {
        Assert.Equal(ScalarType.Float32, DevicePolicy.ComputeDType(CPU, ScalarType.BFloat16));
        Assert.Equal(ScalarType.BFloat16, DevicePolicy.ComputeDType(CPU, ScalarType.BFloat16, force: true));
        Assert.Equal(ScalarType.Float16, DevicePolicy.ComputeDType(new Device(DeviceType.CUDA, 0), ScalarType.Float16));
        Assert.Equal(ScalarType.BFloat16, DevicePolicy.ParseDType("bf16"));
        Assert.Throws<ArgumentException>(() => DevicePolicy.ComputeDType(CPU, ScalarType.Int32));
    }
}
