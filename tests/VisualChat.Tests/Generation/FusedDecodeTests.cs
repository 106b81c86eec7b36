using TorchSharp;
using VisualChat.Model;
using VisualChat.Tests.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Generation;

/// <summary>The fused C# decode step (LlamaStepDecoder) against the libtorch forward it replaces: same logits up to
/// summation order for batched sequences of different lengths, every attention mode it takes, bf16 weights and caches.</summary>
public class FusedDecodeTests
{
    static LlamaForCausalLM Llama(bool tied, bool bias)
    {
        var config = LlamaTestModels.Tiny(tied, attentionBias: bias);
        config.MaxPositionEmbeddings = 64;
        var model = new LlamaForCausalLM(config, seed: 11);
        model.eval();
        return model;
    }

    // Five sequences of different lengths: the batched kernels' 4-wide tiles and their remainders both run.
    static readonly int[][] Prompts = [[1, 5, 9, 3, 17], [1, 7], [1, 40, 41, 42, 43, 44, 45, 46, 47], [1, 2, 3], [1, 90, 91, 92]];
    static readonly int[][] Fed = [[12, 30, 2, 99, 5, 6], [8, 8, 8, 120, 1, 0], [64, 3, 77, 21, 9, 10], [4, 5, 6, 7, 8, 9], [100, 101, 102, 103, 104, 105]];

    /// <summary>Prefills each prompt, then feeds the tokens of <see cref="Fed"/> one step at a time to all sequences
    /// together; returns every step's logits per sequence.</summary>
    static List<float[][]> Decode(ICausalDecoder decoder, Func<int, DecoderPrompt> prompt, int sequences = 5)
    {
        var states = Enumerable.Range(0, sequences).Select(i => {
            var state = decoder.CreateState(4);   // small: the steps grow the cache
            decoder.Prefill(state, prompt(i));
            return state;
        }).ToArray();
        var steps = new List<float[][]>();
        try {
            for (int t = 0; t < Fed[0].Length; t++) {
                decoder.Step(states, states.Select((_, i) => Fed[i][t]).ToArray());
                steps.Add(states.Select(s => s.NextLogits!.to(ScalarType.Float32).data<float>().ToArray()).ToArray());
            }
        } finally {
            foreach (var s in states) s.Dispose();
        }
        return steps;
    }

    static float MaxDiff(List<float[][]> a, List<float[][]> b) =>
        a.Zip(b).SelectMany(p => p.First.Zip(p.Second)).SelectMany(r => r.First.Zip(r.Second)).Max(v => Math.Abs(v.First - v.Second));

    static float MaxAbs(List<float[][]> a) => a.SelectMany(s => s).SelectMany(r => r).Max(Math.Abs);

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void LlamaFusedStepsEqualTheForward(bool tied, bool bias)
    {
        using var model = Llama(tied, bias);
        DecoderPrompt Prompt(int i) => new(Prompts[i]);
        model.FusedDecode = false;
        var reference = Decode(model, Prompt);
        Assert.Equal("FusedDecode is off", model.FusedDecodeUnavailableReason);
        model.FusedDecode = true;
        var fused = Decode(model, Prompt);
        Assert.Null(model.FusedDecodeUnavailableReason);
        Assert.True(MaxAbs(reference) > 0.1f, "the logits are not trivially small");
        Assert.True(MaxDiff(reference, fused) < 2e-5f, $"fused vs forward: {MaxDiff(reference, fused)}");
    }

    [Fact]
    public void BF16WeightsDecodeAsTheirFp32Values()
    {
        // The same weight values in fp32 and bf16: the fused step computes in fp32 either way, so the bf16 kernel must
        // give the fp32 result up to summation order (caches prefilled by the fp32 model).
        using var model32 = Llama(tied: false, bias: false);
        using (no_grad()) {
            foreach (var (_, p) in model32.named_parameters()) p.copy_(p.to(ScalarType.BFloat16).to(ScalarType.Float32));
        }
        using var model16 = Llama(tied: false, bias: false);
        model16.load_state_dict(model32.state_dict());
        model16.to(ScalarType.BFloat16);
        model32.FusedDecode = false;
        var reference = Decode(model32, i => new DecoderPrompt(Prompts[i]));
        var states = Prompts.Select(p => {
            var s = ((ICausalDecoder)model32).CreateState(4);
            model32.Prefill(s, new DecoderPrompt(p));
            return s;
        }).ToArray();
        try {
            for (int t = 0; t < Fed[0].Length; t++) {
                model16.Step(states, states.Select((_, i) => Fed[i][t]).ToArray());
                Assert.Null(model16.FusedDecodeUnavailableReason);
                for (int i = 0; i < states.Length; i++) {
                    var got = states[i].NextLogits!.data<float>().ToArray();
                    float diff = got.Zip(reference[t][i]).Max(v => Math.Abs(v.First - v.Second));
                    Assert.True(diff < 2e-5f, $"step {t}, sequence {i}: {diff}");
                }
            }
        } finally {
            foreach (var s in states) s.Dispose();
        }
    }

    [Fact]
    public void BF16CachesFollowTheBF16Forward()
    {
        using var model = Llama(tied: true, bias: false);
        model.to(ScalarType.BFloat16);
        model.FusedDecode = false;
        var reference = Decode(model, i => new DecoderPrompt(Prompts[i]));
        model.FusedDecode = true;
        var fused = Decode(model, i => new DecoderPrompt(Prompts[i]));
        Assert.Null(model.FusedDecodeUnavailableReason);
        // libtorch rounds every bf16 activation, the fused step only the cached keys and values.
        Assert.True(MaxDiff(reference, fused) < 0.05f * MaxAbs(reference), $"{MaxDiff(reference, fused)} vs scale {MaxAbs(reference)}");
    }

    [Theory]
    [InlineData(AttentionMode.Mmca)]
    [InlineData(AttentionMode.Causal)]
    public void VisualChatFusedStepsEqualTheForward(AttentionMode mode)
    {
        using var model = VisualChatPresets.Create(VisualChatPresets.Tiny, 3, mode);
        model.eval();
        var lm = model.lm;
        int img = model.Config.ImageTokenId;
        // Images at different places, so text steps read them through mmca's second softmax.
        int[][] prompts = [[1, 50, img, 51, img, 52], [1, img, 53], [1, 54, 55, 56, img]];
        int[] imagesPer = [2, 1, 1];
        DecoderPrompt Prompt(int i) => new(prompts[i], stack(Enumerable.Range(0, imagesPer[i])
            .Select(k => full(new long[] { 3, 32, 32 }, 0.2f * (k + i) - 0.4f)).ToArray()));
        lm.FusedDecode = false;
        var reference = Decode(model, Prompt, prompts.Length);
        lm.FusedDecode = true;
        var fused = Decode(model, Prompt, prompts.Length);
        Assert.Null(lm.FusedDecodeUnavailableReason);
        Assert.True(MaxDiff(reference, fused) < 2e-5f, $"fused vs forward: {MaxDiff(reference, fused)}");
    }

    [Fact]
    public void CausalCrossDecodesThroughTheForwardAndSaysWhy()
    {
        using var model = VisualChatPresets.Create(VisualChatPresets.Tiny, 3, AttentionMode.CausalCross);
        model.eval();
        using var state = ((ICausalDecoder)model).CreateState();
        model.Prefill(state, new DecoderPrompt([1, model.Config.ImageTokenId, 5], full(new long[] { 1, 3, 32, 32 }, 0.1f)));
        model.Step([state], [7]);
        Assert.Contains("CausalCrossAttentionKernel", model.lm.FusedDecodeUnavailableReason);
    }

    /// <summary>Widths that are not multiples of 16 (hidden 72, head 18, MLP 100) take the 256-bit kernels and their
    /// scalar tails, which an AVX-512 machine otherwise never runs.</summary>
    [Fact]
    public void WidthsOffTheVectorGridEqualTheForward()
    {
        var config = LlamaTestModels.Tiny();
        config.HiddenSize = 72;
        config.IntermediateSize = 100;
        config.VocabSize = 131;
        config.MaxPositionEmbeddings = 64;
        using var model = new LlamaForCausalLM(config, seed: 12);
        model.eval();
        DecoderPrompt Prompt(int i) => new(Prompts[i]);
        model.FusedDecode = false;
        var reference = Decode(model, Prompt);
        model.FusedDecode = true;
        var fused = Decode(model, Prompt);
        Assert.Null(model.FusedDecodeUnavailableReason);
        Assert.True(MaxDiff(reference, fused) < 2e-5f, $"fused vs forward: {MaxDiff(reference, fused)}");
    }

    /// <summary>Heads of 64 and 128 dimensions (LLaMA-7B's) take the 512-bit attention kernel on an AVX-512 CPU (elsewhere
    /// the general kernel, with wide heads), which the tiny models' 16-dimension heads never reach: causal LLaMA with
    /// grouped KV heads, and VisualChat's mmca with images.</summary>
    [Theory]
    [InlineData(64)]
    [InlineData(128)]
    public void WideHeadsEqualTheForward(int headDim)
    {
        var config = LlamaTestModels.Tiny();
        config.HiddenSize = 256;
        config.NumAttentionHeads = 256 / headDim;
        config.NumKeyValueHeads = Math.Max(1, config.NumAttentionHeads / 2);
        config.MaxPositionEmbeddings = 64;
        using (var model = new LlamaForCausalLM(config, seed: 13)) {
            model.eval();
            DecoderPrompt Prompt(int i) => new(Prompts[i]);
            model.FusedDecode = false;
            var reference = Decode(model, Prompt);
            model.FusedDecode = true;
            var fused = Decode(model, Prompt);
            Assert.Null(model.FusedDecodeUnavailableReason);
            Assert.True(MaxDiff(reference, fused) < 2e-5f, $"llama, head {headDim}: fused vs forward: {MaxDiff(reference, fused)}");
        }

        using var tiny = VisualChatPresets.Create(VisualChatPresets.Tiny, 3, AttentionMode.Mmca);
        var lmConfig = tiny.LmConfig;
        var wide = new LlamaConfig {
            VocabSize = lmConfig.VocabSize, HiddenSize = 256, IntermediateSize = 96, NumHiddenLayers = 2, NumAttentionHeads = 256 / headDim,
            MaxPositionEmbeddings = 64, RmsNormEps = 1e-5, BosTokenId = lmConfig.BosTokenId, EosTokenId = lmConfig.EosTokenId,
        };
        using var visual = new VisualChatModel(tiny.Config, wide, seed: 3);
        visual.eval();
        int img = visual.Config.ImageTokenId;
        int[][] prompts = [[1, 50, img, 51, img, 52], [1, img, 53], [1, 54, 55, 56, img]];
        int[] imagesPer = [2, 1, 1];
        DecoderPrompt ImagePrompt(int i) => new(prompts[i], stack(Enumerable.Range(0, imagesPer[i])
            .Select(k => full(new long[] { 3, 32, 32 }, 0.2f * (k + i) - 0.4f)).ToArray()));
        visual.lm.FusedDecode = false;
        var mmcaReference = Decode(visual, ImagePrompt, prompts.Length);
        visual.lm.FusedDecode = true;
        var mmcaFused = Decode(visual, ImagePrompt, prompts.Length);
        Assert.Null(visual.lm.FusedDecodeUnavailableReason);
        Assert.True(MaxDiff(mmcaReference, mmcaFused) < 2e-5f, $"mmca, head {headDim}: fused vs forward: {MaxDiff(mmcaReference, mmcaFused)}");
    }

    /// <summary>A q8 model whose fused path is off prefills every chat turn through libtorch: a second prompt on a
    /// cache that already holds the first equals one prefill of both.</summary>
    [Fact]
    public void Q8LaterTurnsPrefillThroughLibtorchWhenFusedDecodeIsOff()
    {
        using var fp32 = Llama(tied: false, bias: false);
        using var q8 = LlamaQuantizer.Quantize(fp32);
        q8.FusedDecode = false;
        ICausalDecoder decoder = q8;
        using var turns = decoder.CreateState(32);
        decoder.Prefill(turns, new DecoderPrompt(Prompts[0]));
        decoder.Prefill(turns, new DecoderPrompt(Prompts[2]));
        using var once = decoder.CreateState(32);
        decoder.Prefill(once, new DecoderPrompt([.. Prompts[0], .. Prompts[2]]));
        float diff = (turns.NextLogits! - once.NextLogits!).abs().max().item<float>();
        Assert.True(diff < 1e-4f, $"two turns vs one prefill: {diff}");
    }

    static float MaxDiffPerStep(List<float[][]> a, List<float[][]> b, int step) =>
        a[step].Zip(b[step]).SelectMany(r => r.First.Zip(r.Second)).Max(v => Math.Abs(v.First - v.Second));

    [Fact]
    public void Q8StepsStayCloseToFp32AndPickTheSameTokens()
    {
        using var fp32 = Llama(tied: true, bias: false);
        using var q8 = LlamaQuantizer.Quantize(fp32);
        Assert.True(q8.IsQuantized);
        Assert.IsType<QuantizedLinear>(q8.lm_head);
        fp32.FusedDecode = false;
        var reference = Decode(fp32, i => new DecoderPrompt(Prompts[i]));
        var fused = Decode(q8, i => new DecoderPrompt(Prompts[i]));
        Assert.Null(q8.FusedDecodeUnavailableReason);
        // Weights and activations both rounded to 8 bits per 32-value block: a few percent of the logit scale.
        float scale = MaxAbs(reference);
        for (int t = 0; t < reference.Count; t++)
            Assert.True(MaxDiffPerStep(reference, fused, t) < 0.05f * scale, $"step {t}: {MaxDiffPerStep(reference, fused, t)} vs scale {scale}");
        // The libtorch path of the q8 model (dequantized weights, fp32 activations) sits between the two.
        q8.FusedDecode = false;
        var dequantized = Decode(q8, i => new DecoderPrompt(Prompts[i]));
        Assert.True(MaxDiff(dequantized, fused) < 0.03f * scale, $"q8 fused vs q8 forward: {MaxDiff(dequantized, fused)}");

        // Greedy generation: the same tokens as fp32 for 8 steps on this model.
        q8.FusedDecode = true;
        fp32.FusedDecode = true;
        var options = new VisualChat.Inference.Generation.GenerationOptions { MaxNewTokens = 8, StopTokenIds = [] };
        var expected = VisualChat.Inference.Generation.TextGenerator.Generate(fp32, Prompts[0], options).TokenIds;
        var actual = VisualChat.Inference.Generation.TextGenerator.Generate(q8, Prompts[0], options).TokenIds;
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void QuantizedFolderLoadsAsTheInMemoryQuantization()
    {
        using var source = new TempFolder();
        using var output = new TempFolder();
        using var fp32 = Llama(tied: false, bias: false);
        fp32.SavePretrained(source.Path);
        var report = LlamaQuantizer.Quantize(source.Path, output.Path);
        Assert.Equal(2 * 7 + 1, report.QuantizedMatrices);
        Assert.True(report.OutputWeightBytes < report.SourceWeightBytes / 2, $"{report.OutputWeightBytes} vs {report.SourceWeightBytes}");
        Assert.Contains("\"quant_method\": \"vchat_q8\"", File.ReadAllText(Path.Combine(output.Path, "config.json")));
        using var loaded = LlamaForCausalLM.FromPretrained(output.Path);
        using var inMemory = LlamaQuantizer.Quantize(fp32);
        var expected = inMemory.state_dict();
        foreach (var (name, tensor) in loaded.state_dict())
            Assert.True(tensor.equal(expected[name]).all().item<bool>(), $"{name} differs after the round trip");
        Assert.Equal(ScalarType.Int8, loaded.state_dict()["model.layers.0.self_attn.q_proj.weight"].dtype);
        var again = Assert.Throws<InvalidDataException>(() => LlamaQuantizer.Quantize(output.Path, source.Path + "-again"));
        Assert.Contains("already quantized", again.Message);
    }

    /// <summary>Two 32-value blocks, one small and one 300× larger: each block's own scale must keep the small one precise.</summary>
    static float[] TwoBlocksOfDifferentScale() =>
        Enumerable.Range(0, 64).Select(i => MathF.Sin(i * 0.7f) * (i < 32 ? 0.01f : 3f)).ToArray();

    [Fact]
    public void Q8BlocksRoundTripWithinHalfAStep()
    {
        var values = TwoBlocksOfDifferentScale();
        var q = new sbyte[64];
        var scales = new float[2];
        var back = new float[64];
        unsafe {
            fixed (float* x = values) fixed (sbyte* qp = q) fixed (float* sp = scales) fixed (float* b = back) {
                VisualChat.Kernels.Q8.Quantize(x, 64, qp, sp);
                VisualChat.Kernels.Q8.Dequantize(qp, sp, 64, b);
            }
        }
        // Each block has its own scale: max|x| / 127, so the small block keeps its precision next to the large one.
        Assert.Equal(values.Take(32).Max(MathF.Abs) / 127f, scales[0], 1e-9f);
        Assert.Equal(values.Skip(32).Max(MathF.Abs) / 127f, scales[1], 1e-6f);
        for (int i = 0; i < 64; i++) Assert.True(Math.Abs(values[i] - back[i]) <= scales[i / 32] / 2 + 1e-9f, $"value {i}");
        Assert.Contains(q, v => v == 127 || v == -127);
    }

    [Fact]
    public void Q4BlocksRoundTripWithinHalfAStep()
    {
        var values = TwoBlocksOfDifferentScale();
        var codes = new byte[32];
        var scales = new float[2];
        var back = new float[64];
        unsafe {
            fixed (float* x = values) fixed (byte* c = codes) fixed (float* sp = scales) fixed (float* b = back) {
                VisualChat.Kernels.Q4.Quantize(x, 64, c, sp);
                VisualChat.Kernels.Q4.Dequantize(c, sp, 64, b);
            }
        }
        for (int block = 0; block < 2; block++) {
            // s = m / −8 for the value m of largest magnitude, which comes back exactly (code 0).
            var run = values.Skip(32 * block).Take(32).ToArray();
            float m = run.MaxBy(MathF.Abs);
            Assert.Equal(m / -8f, scales[block]);
            Assert.Equal(m, back[32 * block + Array.IndexOf(run, m)]);
        }
        for (int i = 0; i < 64; i++) {
            float s = MathF.Abs(scales[i / 32]), steps = values[i] / scales[i / 32];
            // Codes reach −8…7 steps: values beyond 7.5 steps (the opposite sign of m) clamp to 7, within one step.
            float bound = steps > 7.5f ? s : s / 2;
            Assert.True(Math.Abs(values[i] - back[i]) <= bound + 1e-7f, $"value {i}: {values[i]} came back as {back[i]} (step {s})");
        }
        // Weight i and weight i + 16 share a byte: low nibble, high nibble.
        Assert.Equal(Math.Clamp((int)MathF.Round(values[0] / scales[0]) + 8, 0, 15), codes[0] & 0xF);
        Assert.Equal(Math.Clamp((int)MathF.Round(values[16] / scales[0]) + 8, 0, 15), codes[0] >> 4);
    }

    /// <summary>The q4 kernel against the integer dot products it stands for, computed here in double precision:
    /// Σ_blocks s_w · s_x · Σ (c − 8) · q_x, for batch 1 (the unrolled pairs and the odd last block) and batch 3.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public unsafe void Q4KernelComputesTheBlocksIntegerDotProducts(int batch)
    {
        const int rows = 5, cols = 96;   // three blocks: one unrolled pair and the odd one
        var random = new Random(4);
        var weights = Enumerable.Range(0, rows * cols).Select(_ => (float)random.NextDouble() * 2 - 1).ToArray();
        var inputs = Enumerable.Range(0, batch * cols).Select(_ => (float)random.NextDouble() * 4 - 2).ToArray();
        var codes = new byte[rows * cols / 2];
        var weightScales = new float[rows * cols / 32];
        var xq = new sbyte[batch * cols];
        var xScales = new float[batch * cols / 32];
        var y = new float[batch * rows];
        fixed (float* w = weights) fixed (float* x = inputs) fixed (byte* c = codes) fixed (float* ws = weightScales)
        fixed (sbyte* q = xq) fixed (float* xs = xScales) fixed (float* yp = y) {
            for (int r = 0; r < rows; r++) VisualChat.Kernels.Q4.Quantize(w + r * cols, cols, c + r * cols / 2, ws + r * cols / 32);
            VisualChat.Kernels.Q8.Quantize(x, batch * cols, q, xs);
            var matrix = new VisualChat.Kernels.WeightMatrix(VisualChat.Kernels.WeightFormat.Q4, c, ws, rows, cols);
            VisualChat.Kernels.MatVec.Multiply(matrix, 0, rows, x, q, xs, cols, batch, yp, rows, accumulate: false);
        }
        for (int b = 0; b < batch; b++) {
            for (int r = 0; r < rows; r++) {
                double expected = 0;
                for (int block = 0; block < cols / 32; block++) {
                    long dot = 0;
                    for (int i = 0; i < 32; i++) {
                        byte packed = codes[(r * cols + block * 32) / 2 + i % 16];
                        int code = i < 16 ? packed & 0xF : packed >> 4;
                        dot += (code - 8) * xq[b * cols + block * 32 + i];
                    }
                    expected += (double)weightScales[r * cols / 32 + block] * xScales[(b * cols + block * 32) / 32] * dot;
                }
                Assert.True(Math.Abs(y[b * rows + r] - expected) <= 1e-5 * (1 + Math.Abs(expected)), $"row {r}, vector {b}: {y[b * rows + r]} vs {expected}");
            }
        }
    }

    [Fact]
    public void Q4StepsStayCloseToTheirDequantizedForward_AndTheFolderRoundTrips()
    {
        using var fp32 = Llama(tied: false, bias: false);
        using var q4 = LlamaQuantizer.Quantize(fp32, bits: 4);
        Assert.Equal(4, Assert.IsType<QuantizedLinear>(q4.lm_head).Bits);
        var fused = Decode(q4, i => new DecoderPrompt(Prompts[i]));
        Assert.Null(q4.FusedDecodeUnavailableReason);
        q4.FusedDecode = false;
        var dequantized = Decode(q4, i => new DecoderPrompt(Prompts[i]));
        fp32.FusedDecode = false;
        var reference = Decode(fp32, i => new DecoderPrompt(Prompts[i]));
        float scale = MaxAbs(reference);
        // The fused path differs from the dequantized forward only by the activations' 8-bit blocks, as for q8.
        Assert.True(MaxDiff(dequantized, fused) < 0.03f * scale, $"q4 fused vs q4 forward: {MaxDiff(dequantized, fused)} vs scale {scale}");
        // 16 levels per block are coarse: the logits move further from fp32 than q8's (< 5 %), yet stay bounded.
        Assert.True(MaxDiff(reference, fused) < 0.3f * scale, $"q4 vs fp32: {MaxDiff(reference, fused)} vs scale {scale}");

        using var source = new TempFolder();
        using var output = new TempFolder();
        fp32.SavePretrained(source.Path);
        var report = LlamaQuantizer.Quantize(source.Path, output.Path, bits: 4);
        Assert.True(report.OutputWeightBytes < report.SourceWeightBytes / 3, $"{report.OutputWeightBytes} vs {report.SourceWeightBytes}");
        string config = File.ReadAllText(Path.Combine(output.Path, "config.json"));
        Assert.Contains("\"quant_method\": \"vchat_q4\"", config);
        Assert.Contains("\"bits\": 4", config);
        using var loaded = LlamaForCausalLM.FromPretrained(output.Path);
        var expected = q4.state_dict();
        foreach (var (name, tensor) in loaded.state_dict())
            Assert.True(tensor.equal(expected[name]).all().item<bool>(), $"{name} differs after the round trip");
        var packed = loaded.state_dict()["model.layers.0.self_attn.q_proj.weight"];
        Assert.Equal(ScalarType.Byte, packed.dtype);
        Assert.Equal(new long[] { fp32.Config.NumAttentionHeads * fp32.Config.HeadDim, fp32.Config.HiddenSize / 2 }, packed.shape);
    }
}
