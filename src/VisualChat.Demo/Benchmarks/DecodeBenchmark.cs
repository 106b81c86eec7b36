using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using TorchSharp;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks;

/// <param name="Variant">What was measured: the path (libtorch forward or fused kernels) and the weight format.</param>
/// <param name="Batch">Sequences decoded together (each its own KV cache).</param>
/// <param name="TokensPerSecond">Aggregate tokens/s over all sequences, greedy, after the prefill.</param>
/// <param name="WeightBytesPerStep">Weight bytes one step reads (every matrix once, one embedding row per sequence).</param>
/// <param name="ReadBoundTokensPerSecond">Streaming-read bandwidth ÷ bytes per step × batch.</param>
/// <param name="ArithmeticBoundTokensPerSecond">GEMM FLOP/s ÷ 2 FLOPs per matrix weight per token, when measured.</param>
/// <param name="MatrixMs">Per step: time in the weight-reading matrix regions (fused path only).</param>
/// <param name="AttentionMs">Per step: attention (fused path only).</param>
/// <param name="OtherMs">Per step: everything else — sampling, norms, bookkeeping (fused path only).</param>
public sealed record DecodeBenchmarkRow(string Variant, int Batch, double TokensPerSecond, long WeightBytesPerStep,
    double ReadBoundTokensPerSecond, double? ArithmeticBoundTokensPerSecond, double? MatrixMs, double? AttentionMs, double? OtherMs)
{
    /// <summary>The lower of the two bounds: no decode can beat it.</summary>
    public double BoundTokensPerSecond => Math.Min(ReadBoundTokensPerSecond, ArithmeticBoundTokensPerSecond ?? double.PositiveInfinity);
    /// <summary>True when arithmetic, not reading the weights, bounds this row (large batches).</summary>
    public bool ComputeBound => ArithmeticBoundTokensPerSecond < ReadBoundTokensPerSecond;
    public double RatioToBound => TokensPerSecond / BoundTokensPerSecond;
}

/// <summary>A prompt of <paramref name="Tokens"/> through libtorch's forward (the prefill every request starts with).</summary>
/// <param name="FlopsPerSecond">Matrix FLOPs of the prefill (2 per weight per prompt token, the head once) ÷ its time;
/// attention's own products are left out, so the share is a lower bound.</param>
/// <param name="GemmFlopsPerSecond">The fp32 GEMM throughput measured in the same run.</param>
public sealed record PrefillBenchmarkResult(int Tokens, double TokensPerSecond, double FlopsPerSecond, double GemmFlopsPerSecond)
{
    public double ShareOfGemmPeak => FlopsPerSecond / GemmFlopsPerSecond;
}

/// <summary>How far q8 weights move a model: over a teacher-forced sequence, the share of positions whose greedy token
/// (top-1) equals fp32's, and the RMS of the logit differences relative to the RMS of fp32's logits.</summary>
public sealed record QuantizationAgreement(string Format, int Positions, double TopOneAgreement, double RelativeLogitRmsError);

/// <summary>
/// Decode speed of a randomly initialised LLaMA for each weight format and batch size, against the bound measured in the
/// same run: one step reads every weight once, so aggregate tokens/s ≤ batch × streaming-read bandwidth ÷ weight bytes.
/// The first row (libtorch's eager forward, fp32, batch 1) is the baseline the others are compared with.
/// </summary>
public static class DecodeBenchmark
{
    /// <summary>Weight formats the fused kernels read.</summary>
    public static readonly string[] Formats = ["fp32", "bf16", "q8", "q4"];

    /// <param name="bandwidth">Reads the streaming-read bandwidth (bytes/s, e.g. <see cref="Roofline.StreamingReadProbe"/>);
    /// called right before each timed run, whose read bound uses that reading.</param>
    /// <param name="repeats">Timed runs per row, each after a bandwidth reading. A row reports its fastest run against
    /// its highest reading: on a shared host both come and go, and pairing the best of each keeps the ratio conservative.</param>
    /// <param name="flops">Dense fp32 FLOP/s (<see cref="Roofline.GemmThroughput"/>) measured in this run; 0 leaves the
    /// arithmetic bound out.</param>
    public static IEnumerable<DecodeBenchmarkRow> Run(LlamaConfig config, IReadOnlyList<string> formats, IReadOnlyList<int> batches, Func<double> bandwidth,
        int newTokens = 64, int promptTokens = 16, long seed = 0, int repeats = 3, double flops = 0)
    {
        if (repeats < 1) throw new ArgumentOutOfRangeException(nameof(repeats), repeats, "Time each row at least once.");
        if (newTokens < 2) throw new ArgumentOutOfRangeException(nameof(newTokens), newTokens, "Decode at least 2 tokens so a rate after the prefill can be measured.");
        foreach (var format in formats) {
            if (!Formats.Contains(format)) throw new ArgumentException($"Unknown weight format '{format}'; use {string.Join(", ", Formats)}.", nameof(formats));
        }
        var prompt = Enumerable.Range(0, promptTokens).Select(i => 3 + (i * 7919) % (config.VocabSize - 3)).ToArray();
        using var fp32 = new LlamaForCausalLM(config, seed);
        fp32.eval();

        // Every weight of the matrices (embedding lookup excluded, the head included) costs one multiply-add per token.
        var (layerWeights, headWeights) = MatrixWeights(config);
        double flopsPerToken = 2.0 * (layerWeights + headWeights);
        double? arithmetic = flops > 0 ? flops / flopsPerToken : null;

        // Baseline: the libtorch forward, one sequence.
        fp32.FusedDecode = false;
        Measure(fp32, prompt, 1, Math.Min(4, newTokens));
        var runs = new List<(double Rate, double Bandwidth)>();
        for (int r = 0; r < repeats; r++) {
            double reading = bandwidth();
            runs.Add((Measure(fp32, prompt, 1, newTokens).Rate, reading));
        }
        fp32.FusedDecode = true;
        Measure(fp32, prompt, 1, 2);
        long fp32Bytes = fp32.TakeFusedDecodeProfile(1)!.Value.WeightBytes;
        double baseRate = runs.Max(run => run.Rate), baseBandwidth = runs.Max(run => run.Bandwidth);
        yield return new DecodeBenchmarkRow("libtorch forward, fp32 (baseline)", 1, baseRate, fp32Bytes, baseBandwidth / fp32Bytes, arithmetic, null, null, null);

        foreach (var format in formats) {
            using var model = format switch {
                "bf16" => Converted(fp32, ScalarType.BFloat16),
                "q8" => LlamaQuantizer.Quantize(fp32),
                "q4" => LlamaQuantizer.Quantize(fp32, bits: 4),
                _ => null,
            };
            var target = model ?? fp32;
            foreach (int batch in batches) {
                Measure(target, prompt, batch, Math.Min(4, newTokens));
                DecodeBenchmarkRow? best = null;
                double highest = 0;
                for (int r = 0; r < repeats; r++) {
                    highest = Math.Max(highest, bandwidth());
                    var (rate, seconds) = Measure(target, prompt, batch, newTokens);
                    if (target.FusedDecodeUnavailableReason is { } why) throw new InvalidOperationException($"The {format} model did not decode fused: {why}.");
                    var (split, bytes) = target.TakeFusedDecodeProfile(batch)!.Value;
                    // The last sampled token needs no model step: the wall time is spread over the steps that ran.
                    double stepMs = 1000.0 * seconds / Math.Max(1, split.Steps);
                    if (best is not null && rate <= best.TokensPerSecond) continue;
                    best = new DecodeBenchmarkRow($"fused, {format}", batch, rate, bytes, 0, arithmetic,
                        split.MatrixMs, split.AttentionMs, stepMs - split.MatrixMs - split.AttentionMs);
                }
                best = best! with { ReadBoundTokensPerSecond = highest / best.WeightBytesPerStep * batch };
                yield return best!;
            }
        }
    }

    /// <summary>Times the prefill of a <paramref name="tokens"/>-token prompt (fp32, libtorch, batch 1): the fastest of
    /// <paramref name="repeats"/> runs after a warm-up.</summary>
    public static PrefillBenchmarkResult Prefill(LlamaConfig config, int tokens, double gemmFlops, long seed = 0, int repeats = 3)
    {
        if (tokens < 1) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "Prefill at least one token.");
        if (gemmFlops <= 0) throw new ArgumentOutOfRangeException(nameof(gemmFlops), gemmFlops, "Measure the GEMM throughput first (Roofline.GemmThroughput).");
        using var model = new LlamaForCausalLM(config, seed);
        model.eval();
        var prompt = new DecoderPrompt(TokenSequence(config, tokens, seed));
        double best = double.MaxValue;
        for (int r = 0; r <= repeats; r++) {
            using var state = ((ICausalDecoder)model).CreateState(tokens + 1);
            var clock = Stopwatch.StartNew();
            ((ICausalDecoder)model).Prefill(state, prompt);
            if (r > 0) best = Math.Min(best, clock.Elapsed.TotalSeconds);   // run 0 warms up
        }
        var (layers, head) = MatrixWeights(config);
        double flops = 2.0 * tokens * layers + 2.0 * head;   // the head runs for the last position only
        return new PrefillBenchmarkResult(tokens, tokens / best, flops / best, gemmFlops);
    }

    /// <summary>Each quantized format of <paramref name="bits"/> (8: q8, 4: q4) against fp32 on the same random model
    /// over <paramref name="positions"/> teacher-forced tokens; the fp32 model and its logits are computed once.</summary>
    public static IReadOnlyList<QuantizationAgreement> Agreements(LlamaConfig config, IReadOnlyList<int> bits, int positions = 256, long seed = 0)
    {
        using var fp32 = new LlamaForCausalLM(config, seed);
        fp32.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(TokenSequence(config, positions, seed).Select(i => (long)i).ToArray()).unsqueeze(0);
        var reference = fp32.forward(new CausalLMInput(InputIds: ids)).Logits;
        var referenceTokens = reference.argmax(-1);
        double referenceRms = reference.mul(reference).mean().sqrt().item<float>();
        var results = new List<QuantizationAgreement>(bits.Count);
        foreach (int b in bits) {
            using var quantizedModel = LlamaQuantizer.Quantize(fp32, b);
            var quantized = quantizedModel.forward(new CausalLMInput(InputIds: ids)).Logits;
            double agreement = referenceTokens.eq(quantized.argmax(-1)).to(ScalarType.Float32).mean().item<float>();
            var difference = quantized - reference;
            double error = difference.mul(difference).mean().sqrt().item<float>() / referenceRms;
            results.Add(new QuantizationAgreement($"q{b}", positions, agreement, error));
        }
        return results;
    }

    /// <summary>Weights of the decoder layers' matrices (q, k, v, o, gate, up, down; norms excluded) and of the head.</summary>
    static (long Layers, long Head) MatrixWeights(LlamaConfig config)
    {
        long h = config.HiddenSize, q = (long)config.NumAttentionHeads * config.HeadDim, kv = (long)config.KeyValueHeads * config.HeadDim;
        long layer = h * q + 2 * h * kv + q * h + 3 * h * config.IntermediateSize;
        return (config.NumHiddenLayers * layer, (long)config.VocabSize * h);
    }

    /// <summary>A fixed pseudo-random token sequence (the weights are random too, so no text is more natural).</summary>
    static int[] TokenSequence(LlamaConfig config, int length, long seed) =>
        Enumerable.Range(0, length).Select(i => 3 + (int)((i * 7919L + seed * 104729L) % (config.VocabSize - 3))).ToArray();

    static LlamaForCausalLM Converted(LlamaForCausalLM source, ScalarType dtype)
    {
        var copy = new LlamaForCausalLM(source.Config, seed: null, initialize: false);
        copy.load_state_dict(source.state_dict());
        copy.to(dtype);
        copy.eval();
        return copy;
    }

    /// <summary>Prefills <paramref name="batch"/> copies of the prompt, then times <paramref name="newTokens"/> greedy
    /// steps of all of them together (sampling included); returns aggregate tokens/s and the timed seconds.</summary>
    static (double Rate, double Seconds) Measure(LlamaForCausalLM model, int[] prompt, int batch, int newTokens)
    {
        var engine = new GenerationEngine(model);
        var options = new GenerationOptions { MaxNewTokens = newTokens + 1, StopTokenIds = [] };
        var states = Enumerable.Range(0, batch).Select(_ => ((ICausalDecoder)model).CreateState(prompt.Length + newTokens + 2)).ToArray();
        try {
            // The prompts differ in their last token so the sequences do not decode in lockstep.
            foreach (var (state, i) in states.Select((s, i) => (s, i)))
                engine.Add(new GenerationRequest(state, new DecoderPrompt([.. prompt[..^1], 3 + i]), options));
            engine.Step();   // the first token comes from the prefill's logits
            // The time split covers the timed steps only (a q8 model's prefill runs through the same kernels).
            model.TakeFusedDecodeProfile(batch);
            var clock = Stopwatch.StartNew();
            int tokens = 0;
            while (engine.Running.Count > 0) {
                int running = engine.Running.Count;
                engine.Step();
                tokens += running;
            }
            return (tokens / clock.Elapsed.TotalSeconds, clock.Elapsed.TotalSeconds);
        } finally {
            foreach (var s in states) s.Dispose();
        }
    }

    /// <summary>Runs <paramref name="command"/> (through /bin/sh) and reads the <c>achieved tok/s: X</c> line it prints,
    /// as llama2.c's run does.</summary>
    public static double RunPeer(string command)
    {
        var info = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add(command);
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"Could not start the peer command: {command}");
        var stderr = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd() + stderr.Result;
        process.WaitForExit();
        var match = Regex.Match(output, @"achieved tok/s:\s*([0-9.]+)");
        if (!match.Success)
            throw new InvalidOperationException($"The peer command printed no 'achieved tok/s: X' line (exit code {process.ExitCode}): {command}");
        return double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
    }
}
