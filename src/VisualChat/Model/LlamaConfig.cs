using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace VisualChat.Model;

/// <summary>HF <c>rope_scaling</c> block. Newer transformers write <c>rope_type</c>, older ones <c>type</c>.</summary>
public sealed class RopeScalingConfig
{
    [JsonPropertyName("type")] public string? Type { get; set; }
    [JsonPropertyName("rope_type")] public string? RopeType { get; set; }
    [JsonPropertyName("factor")] public double Factor { get; set; } = 1.0;
    [JsonPropertyName("low_freq_factor")] public double? LowFreqFactor { get; set; }
    [JsonPropertyName("high_freq_factor")] public double? HighFreqFactor { get; set; }
    [JsonPropertyName("original_max_position_embeddings")] public int? OriginalMaxPositionEmbeddings { get; set; }

    /// <summary>Lower-case kind: "default", "linear", "dynamic" or "llama3".</summary>
    [JsonIgnore] public string Kind => (RopeType ?? Type ?? "default").ToLowerInvariant();
}

/// <summary>
/// <c>quantization_config</c> of a folder written by <c>vchat quantize</c>: the decoder's linear layers and lm_head are
/// <see cref="QuantizedLinear"/> (<see cref="Bits"/> 8: int8 <c>weight</c>; 4: two 4-bit codes per uint8; fp32
/// <c>weight_scale</c> per block of <see cref="GroupSize"/> inputs); embeddings and norms keep their float type.
/// </summary>
public sealed class QuantizationConfig
{
    /// <summary>The methods this project writes: 8-bit and 4-bit blocks.</summary>
    public const string Q8Method = "vchat_q8", Q4Method = "vchat_q4";

    /// <summary>The config <c>vchat quantize --type q8|q4</c> writes.</summary>
    public static QuantizationConfig For(int bits) => bits switch {
        8 => new QuantizationConfig(),
        4 => new QuantizationConfig { QuantMethod = Q4Method, Bits = 4 },
        _ => throw new ArgumentOutOfRangeException(nameof(bits), $"Quantization has 8 or 4 bits per weight, not {bits}."),
    };

    [JsonPropertyName("quant_method")] public string QuantMethod { get; set; } = Q8Method;
    [JsonPropertyName("bits")] public int Bits { get; set; } = 8;
    [JsonPropertyName("group_size")] public int GroupSize { get; set; } = Kernels.Q8.BlockSize;
}

/// <summary>The fields of a HF <c>LlamaForCausalLM</c> config.json this implementation uses.</summary>
public sealed class LlamaConfig
{
    [JsonPropertyName("model_type")] public string ModelType { get; set; } = "llama";
    [JsonPropertyName("vocab_size")] public int VocabSize { get; set; } = 32000;
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; set; } = 4096;
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; set; } = 11008;
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; set; } = 32;
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; set; } = 32;
    /// <summary>Null in old configs, which means one KV head per query head.</summary>
    [JsonPropertyName("num_key_value_heads")] public int? NumKeyValueHeads { get; set; }
    [JsonPropertyName("head_dim")] public int? HeadDimOverride { get; set; }
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; set; } = "silu";
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; set; } = 2048;
    [JsonPropertyName("initializer_range")] public double InitializerRange { get; set; } = 0.02;
    [JsonPropertyName("rms_norm_eps")] public double RmsNormEps { get; set; } = 1e-6;
    [JsonPropertyName("rope_theta")] public double RopeTheta { get; set; } = 10000.0;
    [JsonPropertyName("rope_scaling")] public RopeScalingConfig? RopeScaling { get; set; }
    [JsonPropertyName("attention_bias")] public bool AttentionBias { get; set; }
    [JsonPropertyName("mlp_bias")] public bool MlpBias { get; set; }
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; set; }
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; set; } = 1;
    /// <summary>An int or a list of ints in config.json; see <see cref="EosTokenIds"/>.</summary>
    [JsonPropertyName("eos_token_id")] public JsonNode? EosTokenId { get; set; } = JsonValue.Create(2);
    [JsonPropertyName("pad_token_id")] public int? PadTokenId { get; set; }
    /// <summary>transformers &lt; 4.56 writes torch_dtype, newer ones write dtype.</summary>
    [JsonPropertyName("torch_dtype")] public string? TorchDtype { get; set; }
    [JsonPropertyName("dtype")] public string? Dtype { get; set; }
    /// <summary>Set in folders written by <c>vchat quantize</c>; null for float checkpoints.</summary>
    [JsonPropertyName("quantization_config")] public QuantizationConfig? Quantization { get; set; }

    [JsonIgnore] public int KeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;
    [JsonIgnore] public int HeadDim => HeadDimOverride ?? HiddenSize / NumAttentionHeads;
    /// <summary>The storage dtype the checkpoint declares, "float32" when it declares none.</summary>
    [JsonIgnore] public string StorageDtype => Dtype ?? TorchDtype ?? "float32";

    [JsonIgnore]
    public IReadOnlyList<int> EosTokenIds => EosTokenId switch {
        null => Array.Empty<int>(),
        JsonArray list => list.Select(n => n!.GetValue<int>()).ToArray(),
        JsonValue v => new[] { v.GetValue<int>() },
        _ => throw new InvalidDataException($"config eos_token_id must be an int or a list of ints, got {EosTokenId.ToJsonString()}.")
    };

    static readonly JsonSerializerOptions WriteOptions = new() {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public static LlamaConfig Parse(string json, string source = "config.json")
    {
        LlamaConfig? config;
        try { config = JsonSerializer.Deserialize<LlamaConfig>(json); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not a valid LLaMA config ({e.Message}).", e); }
        if (config is null) throw new InvalidDataException($"{source}: empty LLaMA config.");
        config.Validate(source);
        return config;
    }

    public static LlamaConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"LLaMA config not found: {path}. Point to the model folder's config.json.", path);
        return Parse(File.ReadAllText(path), path);
    }

    public string ToJson() => JsonSerializer.Serialize(this, WriteOptions);

    public void Save(string path) => File.WriteAllText(path, ToJson());

    public LlamaConfig Clone() => Parse(ToJson(), "clone");

    /// <summary>Throws with the offending field names when the config cannot describe a working model.</summary>
    public void Validate(string source = "config")
    {
        void Require(bool ok, string message) { if (!ok) throw new InvalidDataException($"{source}: {message}"); }
        Require(VocabSize > 0, $"vocab_size must be positive (got {VocabSize}).");
        Require(HiddenSize > 0, $"hidden_size must be positive (got {HiddenSize}).");
        Require(IntermediateSize > 0, $"intermediate_size must be positive (got {IntermediateSize}).");
        Require(NumHiddenLayers > 0, $"num_hidden_layers must be positive (got {NumHiddenLayers}).");
        Require(NumAttentionHeads > 0, $"num_attention_heads must be positive (got {NumAttentionHeads}).");
        Require(KeyValueHeads > 0, $"num_key_value_heads must be positive (got {KeyValueHeads}).");
        Require(HeadDimOverride is not null || HiddenSize % NumAttentionHeads == 0,
            $"hidden_size ({HiddenSize}) must be divisible by num_attention_heads ({NumAttentionHeads}), or head_dim must be given.");
        Require(HeadDim % 2 == 0, $"head_dim ({HeadDim}) must be even for rotary embeddings.");
        Require(NumAttentionHeads % KeyValueHeads == 0,
            $"num_attention_heads ({NumAttentionHeads}) must be divisible by num_key_value_heads ({KeyValueHeads}).");
        Require(HiddenAct is "silu" or "swish", $"hidden_act '{HiddenAct}' is not supported; LLaMA uses 'silu'.");
        Require(MaxPositionEmbeddings > 0, $"max_position_embeddings must be positive (got {MaxPositionEmbeddings}); it is the longest sequence the model handles.");
        Require(RmsNormEps > 0, $"rms_norm_eps must be positive (got {RmsNormEps}).");
        Require(RopeTheta > 0, $"rope_theta must be positive (got {RopeTheta}).");
        if (RopeScaling is { } s) {
            Require(s.Kind is "default" or "linear" or "dynamic" or "llama3",
                $"rope_scaling type '{s.Kind}' is not supported; use linear, dynamic or llama3.");
            Require(s.Kind == "default" || s.Factor >= 1.0, $"rope_scaling.factor must be >= 1 (got {s.Factor}).");
            if (s.Kind == "llama3")
            {
                Require(s.LowFreqFactor is > 0 && s.HighFreqFactor is > 0 && s.OriginalMaxPositionEmbeddings is > 0 && s.HighFreqFactor != s.LowFreqFactor,
                    "rope_scaling llama3 needs low_freq_factor, high_freq_factor (different, positive) and original_max_position_embeddings.");
            }
        }
        if (Quantization is { } q) {
            Require((q.QuantMethod, q.Bits) is (QuantizationConfig.Q8Method, 8) or (QuantizationConfig.Q4Method, 4) && q.GroupSize == Kernels.Q8.BlockSize,
                $"quantization_config {{quant_method: {q.QuantMethod}, bits: {q.Bits}, group_size: {q.GroupSize}}} is not supported; this build reads {QuantizationConfig.Q8Method} with 8 bits or {QuantizationConfig.Q4Method} with 4, group_size {Kernels.Q8.BlockSize} (written by vchat quantize).");
            Require(HiddenSize % q.GroupSize == 0 && IntermediateSize % q.GroupSize == 0 && (NumAttentionHeads * HeadDim) % q.GroupSize == 0,
                $"quantization_config: hidden_size, intermediate_size and heads × head_dim must be multiples of group_size {q.GroupSize}.");
            Require(!TieWordEmbeddings, "quantization_config: a quantized model has its own (quantized) lm_head, so tie_word_embeddings must be false.");
        }
        _ = EosTokenIds;
    }

    /// <summary>Parameter count as HF counts it (a tied lm_head is not counted twice), without allocating anything.</summary>
    public long ParameterCount()
    {
        long h = HiddenSize, qDim = (long)NumAttentionHeads * HeadDim, kvDim = (long)KeyValueHeads * HeadDim, inter = IntermediateSize;
        long attention = h * qDim + 2 * h * kvDim + qDim * h + (AttentionBias ? qDim + 2 * kvDim + h : 0);
        long mlp = 3 * h * inter + (MlpBias ? 2 * inter + h : 0);
        long layer = attention + mlp + 2 * h;
        long embed = (long)VocabSize * h;
        long head = TieWordEmbeddings ? 0 : (long)VocabSize * h;
        return embed + NumHiddenLayers * layer + h + head;
    }

    /// <summary>
    /// Every tensor of the HF state dict (name, shape) in state_dict order, computed from the config alone — what a
    /// streaming writer needs to lay out a checkpoint without building the model. Sums to <see cref="ParameterCount"/>.
    /// </summary>
    public IEnumerable<(string Name, long[] Shape)> ParameterShapes()
    {
        long h = HiddenSize, qDim = (long)NumAttentionHeads * HeadDim, kvDim = (long)KeyValueHeads * HeadDim, inter = IntermediateSize;
        yield return ("model.embed_tokens.weight", [VocabSize, h]);
        for (int i = 0; i < NumHiddenLayers; i++) {
            string p = $"model.layers.{i}.";
            foreach (var (name, outDim, inDim) in new[] { ("q_proj", qDim, h), ("k_proj", kvDim, h), ("v_proj", kvDim, h), ("o_proj", h, qDim) }) {
                yield return ($"{p}self_attn.{name}.weight", [outDim, inDim]);
                if (AttentionBias) yield return ($"{p}self_attn.{name}.bias", [outDim]);
            }
            foreach (var (name, outDim, inDim) in new[] { ("gate_proj", inter, h), ("up_proj", inter, h), ("down_proj", h, inter) }) {
                yield return ($"{p}mlp.{name}.weight", [outDim, inDim]);
                if (MlpBias) yield return ($"{p}mlp.{name}.bias", [outDim]);
            }
            yield return ($"{p}input_layernorm.weight", [h]);
            yield return ($"{p}post_attention_layernorm.weight", [h]);
        }
        yield return ("model.norm.weight", [h]);
        if (!TieWordEmbeddings) yield return ("lm_head.weight", [VocabSize, h]);
    }

    /// <summary>Bytes the weights take when stored as <paramref name="dtype"/> ("float32", "bfloat16", "float16", ...).</summary>
    public long ParameterBytes(string? dtype = null) => ParameterCount() * BytesPerElement(dtype ?? StorageDtype);

    public static int BytesPerElement(string dtype) => dtype.ToLowerInvariant() switch {
        "float32" or "fp32" or "float" => 4,
        "bfloat16" or "bf16" or "float16" or "fp16" or "half" => 2,
        "float64" or "double" => 8,
        "int8" or "uint8" => 1,
        _ => throw new ArgumentException($"Unknown dtype '{dtype}'; use float32, bfloat16 or float16.", nameof(dtype))
    };
}
