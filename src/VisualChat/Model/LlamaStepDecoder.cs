using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp.Modules;
using VisualChat.Attention;
using VisualChat.Kernels;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// The decode step of a LLaMA decoder in C# kernels over the weights' own storage: one new text token for each of B
/// sequences, each with its own KV cache, reading every weight once for the whole batch. Decoding is bound by reading the
/// weights; libtorch's eager path spends about as long again on per-op dispatch, allocation and separate q/k/v and
/// gate/up products. Here each layer is five fork/join regions on a persistent <see cref="ThreadTeam"/> — q/k/v as one
/// band of rows, attention (RoPE, cache write, one or two softmaxes), o with the residual, gate/up with SiLU, down with
/// the residual — and the serial work between them (RMS norms, quantizing activations for q8/q4 weights) is a few
/// microseconds. No tensor is created in a step; buffers grow with the batch and the context and are then reused.
/// </summary>
/// <remarks>
/// Applies to CPU models whose projections are plain fp32/bf16 <see cref="Linear"/> or <see cref="QuantizedLinear"/>
/// layers, with causal or mmca attention, on a CPU with AVX2 and FMA (<see cref="TryCreatePlan"/> says why not
/// otherwise); everything else decodes through the libtorch forward. Results equal that forward up to summation order.
/// Prefill stays on libtorch, whose GEMMs are compute-bound and fast.
/// </remarks>
internal sealed unsafe class LlamaStepDecoder : ITeamWork, IDisposable
{
    /// <summary>Environment variable that turns the fused decode step off (the libtorch forward decodes instead).</summary>
    public const string DisableVariable = "VISUALCHAT_FUSED_DECODE";

    readonly LlamaForCausalLM lm;
    readonly int hidden, heads, kvHeads, headDim, intermediate, layers, qkvRows, inputStride;
    readonly float eps, scale;
    readonly float[] inverseFrequency;
    readonly LayerWeights[] layerWeights;
    readonly bool multiModal;
    WeightMatrix head;
    void* finalNorm;
    bool normsBF16;
    int vocab;

    // Scratch, [batch, width] row-major; grown on demand.
    int capacity;
    float* x, input, qkv, gateUp, logits, cos, sin;
    sbyte* quantized;
    float* quantizedScales;
    readonly float*[] scores;
    readonly int[] scoreCapacity;

    // The step in flight, read by the regions.
    int batch, layer;
    Region region;
    readonly List<KVCache> caches = [];
    readonly List<long> positions = [];
    // Per sequence, read once per step so the attention tasks make no calls into libtorch: every layer's key and value
    // storage ([layer · 2] and [layer · 2 + 1] of a sequence's run), its capacity and its modality storage.
    nint[] kvStorage = [];
    long[] kvCapacity = [];
    nint[] kvModality = [];
    bool kvBF16;

    enum Region { Qkv, Attention, Output, GateUp, Down, Head }

    // Where a step's time goes (Stopwatch ticks, summed over steps): the weight-reading regions, attention, and the
    // whole step; the rest is serial work (norms, activation quantization, embedding rows, logits copy).
    long matrixTicks, attentionTicks, stepTicks, stepCount;

    /// <summary>Time split of the steps since the last call, per step in milliseconds; resets the counters.</summary>
    public DecodeTimeSplit TakeTimeSplit()
    {
        double perStep = stepCount == 0 ? 0 : 1000.0 / System.Diagnostics.Stopwatch.Frequency / stepCount;
        var split = new DecodeTimeSplit(stepCount, matrixTicks * perStep, attentionTicks * perStep, stepTicks * perStep);
        matrixTicks = attentionTicks = stepTicks = stepCount = 0;
        return split;
    }

    struct LayerWeights
    {
        public WeightMatrix Q, K, V, O, Gate, Up, Down;
        public void* InputNorm, PostNorm;
    }

    LlamaStepDecoder(LlamaForCausalLM lm, bool multiModal)
    {
        this.lm = lm;
        this.multiModal = multiModal;
        var c = lm.Config;
        hidden = c.HiddenSize;
        heads = c.NumAttentionHeads;
        kvHeads = c.KeyValueHeads;
        headDim = c.HeadDim;
        intermediate = c.IntermediateSize;
        layers = c.NumHiddenLayers;
        qkvRows = (heads + 2 * kvHeads) * headDim;
        inputStride = RoundUp(Math.Max(Math.Max(hidden, heads * headDim), intermediate), Q8.BlockSize);
        eps = (float)c.RmsNormEps;
        scale = 1f / MathF.Sqrt(headDim);
        inverseFrequency = lm.model.RotaryInverseFrequency.Select(f => (float)f).ToArray();
        layerWeights = new LayerWeights[layers];
        scores = new float*[ThreadTeam.Shared.Size];
        scoreCapacity = new int[ThreadTeam.Shared.Size];
    }

    static int RoundUp(int n, int multiple) => (n + multiple - 1) / multiple * multiple;

    /// <summary>A decoder for <paramref name="lm"/> when its layout allows one, else null and the reason.</summary>
    public static LlamaStepDecoder? TryCreatePlan(LlamaForCausalLM lm, IAttentionKernel kernel, out string? reason)
    {
        reason = Unsupported(lm, kernel);
        return reason is null ? new LlamaStepDecoder(lm, kernel is MmcaAttentionKernel) : null;
    }

    static string? Unsupported(LlamaForCausalLM lm, IAttentionKernel kernel)
    {
        if (Environment.GetEnvironmentVariable(DisableVariable) is "0" or "false" or "off") return $"{DisableVariable} turns it off";
        if (!MatVec.IsSupported) return "the CPU lacks AVX2/FMA";
        if (kernel is not (CausalAttentionKernel or MmcaAttentionKernel)) return $"the {kernel.GetType().Name} attention has no fused decode";
        if (lm.Config.RopeScaling?.Kind == "dynamic") return "dynamic NTK RoPE scaling changes its frequencies with the length";
        if (lm.Config.HeadDim % 2 != 0) return "the head dimension is odd";
        return null;
    }

    /// <summary>Binds the current weights (cheap: pointers only) and says whether every tensor is in a form the kernels
    /// read; rebinding each step keeps the decoder right after training updates, dtype casts or LoRA swaps.</summary>
    bool Bind(int outputRows, out string? reason)
    {
        reason = null;
        var model = lm.model;
        var embed = model.embed_tokens.weight!;
        if (!TensorMemory.IsAddressable(embed) || embed.dtype is not (ScalarType.Float32 or ScalarType.BFloat16)) {
            reason = "the token embedding is not a contiguous fp32/bf16 CPU tensor";
            return false;
        }
        normsBF16 = model.norm.weight.dtype == ScalarType.BFloat16;
        for (int i = 0; i < layers; i++) {
            var l = model.layers[i];
            ref var w = ref layerWeights[i];
            if (!TryMatrix(l.self_attn.q_proj, out w.Q) || !TryMatrix(l.self_attn.k_proj, out w.K) || !TryMatrix(l.self_attn.v_proj, out w.V)
                || !TryMatrix(l.self_attn.o_proj, out w.O) || !TryMatrix(l.mlp.gate_proj, out w.Gate) || !TryMatrix(l.mlp.up_proj, out w.Up)
                || !TryMatrix(l.mlp.down_proj, out w.Down)) {
                reason = $"layer {i} has a projection the kernels cannot read ({Describe(l)}); they take fp32, bf16, q8 or q4 linear layers in contiguous CPU memory (merge LoRA adapters with vchat export first)";
                return false;
            }
            // q, k and v share one quantized copy of the normed input, as gate and up do.
            if (w.Q.Format != w.K.Format || w.K.Format != w.V.Format || w.Gate.Format != w.Up.Format) {
                reason = $"layer {i} mixes matrix formats (quantized and float, or q8 and q4) within q/k/v or gate/up; quantize the whole folder with vchat quantize";
                return false;
            }
            if (!TryNorm(l.input_layernorm, out w.InputNorm) || !TryNorm(l.post_attention_layernorm, out w.PostNorm)) {
                reason = $"layer {i}'s norms are not contiguous CPU tensors of the final norm's dtype";
                return false;
            }
        }
        if (!TryNorm(model.norm, out finalNorm)) {
            reason = "the final norm is not a contiguous fp32/bf16 CPU tensor";
            return false;
        }
        if (lm.lm_head is { } untied) {
            if (!TryMatrix(untied, out head)) {
                reason = "lm_head is not a plain linear layer";
                return false;
            }
        } else {
            head = new WeightMatrix(embed.dtype == ScalarType.Float32 ? WeightFormat.F32 : WeightFormat.BF16, TensorMemory.Pointer(embed), null, outputRows, hidden);
        }
        vocab = Math.Min(outputRows, head.Rows);
        return true;
    }

    static string Describe(LlamaDecoderLayer layer)
    {
        var slots = new (string Name, TorchSharp.torch.nn.Module<Tensor, Tensor> Slot)[]
        {
            ("q_proj", layer.self_attn.q_proj), ("k_proj", layer.self_attn.k_proj), ("v_proj", layer.self_attn.v_proj), ("o_proj", layer.self_attn.o_proj),
            ("gate_proj", layer.mlp.gate_proj), ("up_proj", layer.mlp.up_proj), ("down_proj", layer.mlp.down_proj),
        };
        var (name, slot) = slots.First(s => !TryMatrix(s.Slot, out _));
        return slot is Linear { weight: { } w } ? $"{name} is {w.dtype} on {w.device_type}{(w.is_contiguous() ? "" : ", not contiguous")}" : $"{name} is a {slot.GetType().Name}";
    }

    static bool TryMatrix(TorchSharp.torch.nn.Module<Tensor, Tensor> slot, out WeightMatrix matrix)
    {
        matrix = default;
        switch (slot) {
            case Linear linear when linear.weight is { } w && TensorMemory.IsAddressable(w) && w.dtype is ScalarType.Float32 or ScalarType.BFloat16:
                if (linear.bias is { } b && (b.dtype != ScalarType.Float32 || !TensorMemory.IsAddressable(b))) return false;
                matrix = new WeightMatrix(w.dtype == ScalarType.Float32 ? WeightFormat.F32 : WeightFormat.BF16, TensorMemory.Pointer(w), null,
                    (int)w.shape[0], (int)w.shape[1], linear.bias is { } bias ? (float*)TensorMemory.Pointer(bias) : null);
                return true;
            case QuantizedLinear q when TensorMemory.IsAddressable(q.weight) && TensorMemory.IsAddressable(q.weight_scale):
                matrix = new WeightMatrix(q.Bits == 8 ? WeightFormat.Q8 : WeightFormat.Q4, TensorMemory.Pointer(q.weight), (float*)TensorMemory.Pointer(q.weight_scale),
                    (int)q.OutFeatures, (int)q.InFeatures, q.bias is { } qb ? (float*)TensorMemory.Pointer(qb) : null);
                return true;
            default:
                return false;
        }
    }

    bool TryNorm(LlamaRMSNorm norm, out void* pointer)
    {
        pointer = null;
        var w = norm.weight;
        if (!TensorMemory.IsAddressable(w) || w.dtype != (normsBF16 ? ScalarType.BFloat16 : ScalarType.Float32)) return false;
        pointer = TensorMemory.Pointer(w);
        return true;
    }

    /// <summary>Whether <see cref="Step"/> can take these states now (weights bound, every cache prefilled, unpadded,
    /// addressable, short of the context). False leaves the states untouched.</summary>
    public bool TryPrepare(IReadOnlyList<KVCache> stateCaches, int outputRows, out string? reason)
    {
        if (!Bind(outputRows, out reason)) return false;
        var kvType = ScalarType.Float32;
        for (int i = 0; i < stateCaches.Count; i++) {
            var cache = stateCaches[i];
            if (!cache.SupportsFusedDecode) {
                reason = "a cache is empty, padded or not a contiguous CPU tensor";
                return false;
            }
            var keys = cache.LayerKeys(0)!;
            if (keys.dtype is not (ScalarType.Float32 or ScalarType.BFloat16) || keys.shape[1] != kvHeads || keys.shape[3] != headDim) {
                reason = "a cache's keys are not fp32/bf16 of the model's head layout";
                return false;
            }
            if (i == 0) {
                kvType = keys.dtype;
            } else if (keys.dtype != kvType) {
                reason = "the caches differ in dtype";
                return false;
            }
        }
        return true;
    }

    /// <summary>Feeds <paramref name="tokens"/>[b] (ids into the embedding matrix) to the sequence of
    /// <paramref name="stateCaches"/>[b] and writes its next-token logits into <paramref name="logitsOut"/>[b]
    /// (contiguous fp32 CPU [1, vocab]). Call after <see cref="TryPrepare"/> returned true.</summary>
    public void Step(IReadOnlyList<KVCache> stateCaches, IReadOnlyList<int> tokens, IReadOnlyList<Tensor> logitsOut)
    {
        long stepStart = System.Diagnostics.Stopwatch.GetTimestamp();
        batch = stateCaches.Count;
        EnsureScratch(batch);
        caches.Clear();
        positions.Clear();
        var embed = lm.model.embed_tokens.weight!;
        bool embedBF16 = embed.dtype == ScalarType.BFloat16;
        byte* embedRows = (byte*)TensorMemory.Pointer(embed);
        int elementSize = embedBF16 ? 2 : 4;
        var team = ThreadTeam.Shared;
        try {
            for (int b = 0; b < batch; b++) {
                var cache = stateCaches[b];
                long position = cache.ReserveTextPosition();
                caches.Add(cache);
                positions.Add(position);
                var row = embedRows + (long)tokens[b] * hidden * elementSize;
                for (int i = 0; i < hidden; i++)
                    x[b * hidden + i] = embedBF16 ? MatVec.BF16ToFloat(((ushort*)row)[i]) : ((float*)row)[i];
                int half = headDim / 2;
                for (int i = 0; i < half; i++) {
                    // As HF: the angle in fp32 from the position and the fp32 inverse frequency.
                    float angle = position * inverseFrequency[i];
                    cos[b * headDim + i] = cos[b * headDim + i + half] = MathF.Cos(angle);
                    sin[b * headDim + i] = sin[b * headDim + i + half] = MathF.Sin(angle);
                }
            }
            if (kvCapacity.Length < batch) {
                kvStorage = new nint[batch * layers * 2];
                kvCapacity = new long[batch];
                kvModality = new nint[batch];
            }
            kvBF16 = caches[0].LayerKeys(0)!.dtype == ScalarType.BFloat16;
            for (int b = 0; b < batch; b++) {
                var cache = caches[b];
                kvCapacity[b] = cache.Capacity;
                kvModality[b] = cache.ModalityStorage is { } m ? (nint)TensorMemory.Pointer(m) : 0;
                for (int l = 0; l < layers; l++) {
                    kvStorage[(b * layers + l) * 2] = (nint)TensorMemory.Pointer(cache.LayerKeys(l)!);
                    kvStorage[(b * layers + l) * 2 + 1] = (nint)TensorMemory.Pointer(cache.LayerValues(l)!);
                }
            }
            int longest = 0;
            foreach (var p in positions) longest = Math.Max(longest, (int)p + 1);
            for (int t = 0; t < scores.Length; t++) EnsureScores(t, longest);

            for (layer = 0; layer < layers; layer++) {
                ref var w = ref layerWeights[layer];
                Normalize(w.InputNorm, w.Q.IsQuantized, hidden);
                Run(team, Region.Qkv);
                Run(team, Region.Attention);
                if (w.O.IsQuantized) QuantizeInput(heads * headDim);
                Run(team, Region.Output);
                Normalize(w.PostNorm, w.Gate.IsQuantized, hidden);
                Run(team, Region.GateUp);
                if (w.Down.IsQuantized) Quantize(gateUp, 2 * intermediate, intermediate);
                Run(team, Region.Down);
            }
            Normalize(finalNorm, head.IsQuantized, hidden);
            Run(team, Region.Head);
        } catch {
            // A failed step leaves every cache as it was before it.
            foreach (var cache in caches) cache.Crop(cache.Length);
            throw;
        }
        for (int b = 0; b < batch; b++) {
            caches[b].EndStep();
            new ReadOnlySpan<float>(logits + (long)b * vocab, vocab).CopyTo(new Span<float>(TensorMemory.Pointer(logitsOut[b]), vocab));
        }
        caches.Clear();
        stepTicks += System.Diagnostics.Stopwatch.GetTimestamp() - stepStart;
        stepCount++;
    }

    public int OutputRows => vocab;

    void Run(ThreadTeam team, Region which)
    {
        region = which;
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        team.Run(this);
        long elapsed = System.Diagnostics.Stopwatch.GetTimestamp() - start;
        if (which == Region.Attention) attentionTicks += elapsed;
        else matrixTicks += elapsed;
    }

    /// <summary>Bytes of weights one step reads: every matrix once (for the whole batch) and one embedding row per sequence.</summary>
    public long WeightBytesPerStep(int sequences)
    {
        long bytes = head.Bytes + (long)sequences * hidden * lm.model.embed_tokens.weight!.ElementSize;
        foreach (var w in layerWeights) bytes += w.Q.Bytes + w.K.Bytes + w.V.Bytes + w.O.Bytes + w.Gate.Bytes + w.Up.Bytes + w.Down.Bytes;
        return bytes;
    }

    /// <summary>input[b] = RMSNorm(x[b]) · weight, as HF: variance in fp32, then the weight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Normalize(void* weight, bool quantize, int width)
    {
        for (int b = 0; b < batch; b++) {
            float* xb = x + (long)b * hidden, ib = input + (long)b * inputStride;
            float sum = 0;
            for (int i = 0; i < hidden; i++) sum += xb[i] * xb[i];
            float inv = 1f / MathF.Sqrt(sum / hidden + eps);
            for (int i = 0; i < hidden; i++)
                ib[i] = xb[i] * inv * (normsBF16 ? MatVec.BF16ToFloat(((ushort*)weight)[i]) : ((float*)weight)[i]);
        }
        if (quantize) QuantizeInput(width);
    }

    void QuantizeInput(int width) => Quantize(input, inputStride, width);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Quantize(float* source, int sourceStride, int width)
    {
        for (int b = 0; b < batch; b++)
            Q8.Quantize(source + (long)b * sourceStride, width, quantized + (long)b * inputStride, quantizedScales + (long)b * inputStride / Q8.BlockSize);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Execute(int index, int count)
    {
        ref var w = ref layerWeights[Math.Min(layer, layers - 1)];
        switch (region) {
            case Region.Qkv: {
                // q, k and v as one band of rows: the members split all three matrices' rows between them.
                var (start, end) = ThreadTeam.Share(qkvRows, index, count, 4);
                int qRows = heads * headDim, kRows = kvHeads * headDim;
                Band(w.Q, 0, start, end, qkv, qkvRows);
                Band(w.K, qRows, start, end, qkv, qkvRows);
                Band(w.V, qRows + kRows, start, end, qkv, qkvRows);
                break;
            }
            case Region.Attention: {
                var (start, end) = ThreadTeam.Share(batch * kvHeads, index, count);
                for (int task = start; task < end; task++) Attend(task / kvHeads, task % kvHeads, index);
                break;
            }
            case Region.Output: {
                var (start, end) = ThreadTeam.Share(hidden, index, count, 4);
                MatVec.Multiply(w.O, start, end, input, quantized, quantizedScales, inputStride, batch, x, hidden, accumulate: true);
                break;
            }
            case Region.GateUp: {
                var (start, end) = ThreadTeam.Share(intermediate, index, count, 4);
                int width = 2 * intermediate;
                MatVec.Multiply(w.Gate, start, end, input, quantized, quantizedScales, inputStride, batch, gateUp, width, accumulate: false);
                MatVec.Multiply(w.Up, start, end, input, quantized, quantizedScales, inputStride, batch, gateUp + intermediate, width, accumulate: false);
                // SiLU(gate)·up replaces gate in place: these rows are this member's alone, while the others still read
                // the shared input vector.
                for (int b = 0; b < batch; b++) {
                    float* g = gateUp + (long)b * width, u = g + intermediate;
                    for (int i = start; i < end; i++) g[i] = g[i] / (1f + MathF.Exp(-g[i])) * u[i];
                }
                break;
            }
            case Region.Down: {
                var (start, end) = ThreadTeam.Share(hidden, index, count, 4);
                // fp32 reads the activations where GateUp left them; q8 reads their quantized copy.
                bool q8 = w.Down.IsQuantized;
                MatVec.Multiply(w.Down, start, end, gateUp, quantized, quantizedScales, q8 ? inputStride : 2 * intermediate, batch, x, hidden, accumulate: true);
                break;
            }
            case Region.Head: {
                var (start, end) = ThreadTeam.Share(vocab, index, count, 4);
                MatVec.Multiply(head, start, end, input, quantized, quantizedScales, inputStride, batch, logits, vocab, accumulate: false);
                break;
            }
        }
    }

    /// <summary>The rows of <paramref name="matrix"/> that fall in [start, end) of the concatenated q/k/v band.</summary>
    void Band(in WeightMatrix matrix, int offset, int start, int end, float* y, int yStride)
    {
        int from = Math.Max(start - offset, 0), to = Math.Min(end - offset, matrix.Rows);
        if (from >= to) return;
        MatVec.Multiply(matrix, from, to, input, quantized, quantizedScales, inputStride, batch, y + offset, yStride, accumulate: false);
    }

    /// <summary>Sequence <paramref name="b"/>, KV head <paramref name="g"/>: rotates and caches its key and value, then
    /// attends with the query heads it serves; their outputs go to the o projection's input.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Attend(int b, int g, int member)
    {
        int position = (int)positions[b];
        bool bf16 = kvBF16;
        long capacity = kvCapacity[b];
        int elementSize = bf16 ? 2 : 4;
        byte* keys = (byte*)kvStorage[(b * layers + layer) * 2] + g * capacity * headDim * elementSize;
        byte* values = (byte*)kvStorage[(b * layers + layer) * 2 + 1] + g * capacity * headDim * elementSize;
        float* row = qkv + (long)b * qkvRows;
        float* k = row + heads * headDim + g * headDim;
        float* v = row + (heads + kvHeads) * headDim + g * headDim;
        float* c = cos + (long)b * headDim, s = sin + (long)b * headDim;
        DecodeAttention.Rotate(k, headDim, c, s);
        Write(keys + (long)position * headDim * elementSize, k, bf16);
        Write(values + (long)position * headDim * elementSize, v, bf16);
        int groups = heads / kvHeads;
        float* q = row + g * groups * headDim;
        for (int h = 0; h < groups; h++) DecodeAttention.Rotate(q + h * headDim, headDim, c, s);
        long* modality = (long*)kvModality[b];
        DecodeAttention.Attend(q, groups, headDim, keys, values, bf16, position + 1, modality, multiModal, scale, scores[member],
            input + (long)b * inputStride + g * groups * headDim);
    }

    void Write(byte* destination, float* source, bool bf16)
    {
        if (!bf16) {
            new ReadOnlySpan<float>(source, headDim).CopyTo(new Span<float>(destination, headDim));
            return;
        }
        // Round to nearest even, as libtorch's fp32 → bf16 cast.
        for (int i = 0; i < headDim; i++) {
            uint bits = BitConverter.SingleToUInt32Bits(source[i]);
            ((ushort*)destination)[i] = (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
        }
    }

    void EnsureScratch(int rows)
    {
        if (rows <= capacity) return;
        FreeScratch();
        int r = Math.Max(rows, 1);
        x = Alloc<float>((long)r * hidden);
        input = Alloc<float>((long)r * inputStride);
        quantized = Alloc<sbyte>((long)r * inputStride);
        quantizedScales = Alloc<float>((long)r * inputStride / Q8.BlockSize);
        qkv = Alloc<float>((long)r * qkvRows);
        gateUp = Alloc<float>((long)r * 2 * intermediate);
        logits = Alloc<float>((long)r * Math.Max(lm.Config.VocabSize, head.Rows));
        cos = Alloc<float>((long)r * headDim);
        sin = Alloc<float>((long)r * headDim);
        capacity = r;
    }

    void EnsureScores(int member, int length)
    {
        if (length <= scoreCapacity[member]) return;
        NativeMemory.AlignedFree(scores[member]);
        int grown = Math.Max(length, 2 * scoreCapacity[member]);
        scores[member] = Alloc<float>(grown);
        scoreCapacity[member] = grown;
    }

    static T* Alloc<T>(long count) where T : unmanaged => (T*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(T)), 64);

    void FreeScratch()
    {
        NativeMemory.AlignedFree(x);
        NativeMemory.AlignedFree(input);
        NativeMemory.AlignedFree(quantized);
        NativeMemory.AlignedFree(quantizedScales);
        NativeMemory.AlignedFree(qkv);
        NativeMemory.AlignedFree(gateUp);
        NativeMemory.AlignedFree(logits);
        NativeMemory.AlignedFree(cos);
        NativeMemory.AlignedFree(sin);
        x = input = quantizedScales = qkv = gateUp = logits = cos = sin = null;
        quantized = null;
        capacity = 0;
    }

    public void Dispose()
    {
        FreeScratch();
        for (int t = 0; t < scores.Length; t++) {
            NativeMemory.AlignedFree(scores[t]);
            scores[t] = null;
            scoreCapacity[t] = 0;
        }
        GC.SuppressFinalize(this);
    }

    ~LlamaStepDecoder() => Dispose();
}

/// <summary>Per decode step, in milliseconds: the weight-reading matrix regions, attention, and the whole step.</summary>
internal sealed record DecodeTimeSplit(long Steps, double MatrixMs, double AttentionMs, double StepMs)
{
    public double OtherMs => StepMs - MatrixMs - AttentionMs;
}
