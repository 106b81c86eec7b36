using TorchSharp;
using VisualChat.Text;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Model.Presets;

/// <summary>
/// A LLaMA language-model preset. <see cref="Write"/> streams random weights tensor by tensor from the config's shape
/// list — the module is never built — so large presets need about one tensor of RAM. Init as HF: N(0, 0.02), norms 1.
/// </summary>
public sealed class LanguageModelPreset : IModelPreset
{
    readonly Func<LlamaConfig> makeConfig;

    /// <param name="builtInTokenizer">Makes the preset's own tokenizer; its size must equal the config's vocab_size.
    /// Null: the 32000-id LLaMA vocabulary, copied from <see cref="PresetWriteOptions.TokenizerPath"/> when given.</param>
    public LanguageModelPreset(string name, string summary, Func<LlamaConfig> config, ScalarType defaultDType, Func<SentencePieceTokenizer>? builtInTokenizer = null)
    {
        Name = name;
        Summary = summary;
        makeConfig = config;
        DefaultDType = defaultDType;
        BuiltInTokenizer = builtInTokenizer;
    }

    public string Name { get; }
    public string Summary { get; }
    public ModelPresetKind Kind => ModelPresetKind.LanguageModel;
    public ScalarType DefaultDType { get; }
    public Func<SentencePieceTokenizer>? BuiltInTokenizer { get; }

    /// <summary>A fresh copy of the preset's config.</summary>
    public LlamaConfig Config() => makeConfig();

    public PresetDescription Describe()
    {
        var config = Config();
        var notes = new List<string> {
            $"hidden {config.HiddenSize}, intermediate {config.IntermediateSize}, {config.NumHiddenLayers} layers, {config.NumAttentionHeads} heads " +
            $"({config.KeyValueHeads} KV heads, head_dim {config.HeadDim}), vocab {config.VocabSize}, context {config.MaxPositionEmbeddings}, " +
            $"{(config.TieWordEmbeddings ? "tied" : "untied")} embeddings",
            BuiltInTokenizer is null ? "tokenizer: none built in; pass --tokenizer with a 32000-id LLaMA tokenizer" : "tokenizer: built-in byte-fallback BPE",
        };
        var tensors = config.ParameterShapes().Select(t => new PresetTensor(t.Name, t.Shape)).ToList();
        return new PresetDescription(Name, Kind, Summary, config.ParameterCount(), tensors, notes);
    }

    public PresetWriteResult Write(string folder, PresetWriteOptions options)
    {
        var config = Config();
        var dtype = options.DType ?? DefaultDType;
        string dtypeName = DevicePolicy.DTypeName(dtype);
        long weightBytes = config.ParameterBytes(dtypeName);
        Directory.CreateDirectory(folder);
        EnsureFreeSpace(folder, weightBytes);

        bool hasTokenizer = WriteTokenizer(folder, config, options);
        config.TorchDtype = dtypeName;
        config.Dtype = null;
        LlamaForCausalLM.RemoveWeightFiles(folder);
        config.Save(Path.Combine(folder, "config.json"));

        using var generator = new Generator((ulong)options.Seed);
        using var initializerRange = config.InitializerRange.ToScalar();   // held: see TorchScalars
        int written = 0;
        var shapes = config.ParameterShapes().ToList();
        var files = TensorFiles.SaveShardedStreaming(folder, shapes, dtype, (name, shape) => {
            written++;
            options.Log?.WriteLine($"  [{written}/{shapes.Count}] {name} [{string.Join(", ", shape)}]");
            return name.EndsWith("norm.weight", StringComparison.Ordinal) ? ones(shape)
                : name.EndsWith(".bias", StringComparison.Ordinal) ? zeros(shape)
                : randn(shape, generator: generator).mul_(initializerRange);
        }, options.MaxShardBytes, metadata: new Dictionary<string, string> { ["format"] = "pt" });
        return new PresetWriteResult(folder, new[] { "config.json" }.Concat(files).ToList(), weightBytes, hasTokenizer);
    }

    bool WriteTokenizer(string folder, LlamaConfig config, PresetWriteOptions options)
    {
        if (BuiltInTokenizer is not null && options.TokenizerPath is null) {
            var tokenizer = BuiltInTokenizer();
            if (tokenizer.VocabSize != config.VocabSize)
                throw new InvalidOperationException($"Preset '{Name}': its tokenizer has {tokenizer.VocabSize} ids but its config says vocab_size {config.VocabSize}.");
            tokenizer.Save(folder);
            return true;
        }
        if (options.TokenizerPath is null) {
            options.Log?.WriteLine($"note: no --tokenizer given; '{folder}' has no tokenizer. Copy a {config.VocabSize}-id LLaMA tokenizer " +
                "(tokenizer.model) into it before generating.");
            return false;
        }
        string source = options.TokenizerPath;
        if (Directory.Exists(source)) {
            string[] names = [TokenizerFactory.ModelFileName, TokenizerFactory.JsonFileName, TokenizerFactory.ConfigFileName,
                TokenizerFactory.AddedTokensFileName, "special_tokens_map.json"];
            if (!names.Take(2).Any(n => File.Exists(Path.Combine(source, n))))
                throw new FileNotFoundException($"--tokenizer folder '{source}' has neither {TokenizerFactory.ModelFileName} nor {TokenizerFactory.JsonFileName}.");
            foreach (var name in names)
                if (File.Exists(Path.Combine(source, name))) File.Copy(Path.Combine(source, name), Path.Combine(folder, name), overwrite: true);
        } else if (File.Exists(source)) {
            string name = Path.GetFileName(source);
            if (name is not (TokenizerFactory.ModelFileName or TokenizerFactory.JsonFileName))
                throw new ArgumentException($"--tokenizer '{source}' must be a {TokenizerFactory.ModelFileName}, a {TokenizerFactory.JsonFileName} or a folder holding one.");
            File.Copy(source, Path.Combine(folder, name), overwrite: true);
        } else {
            throw new FileNotFoundException($"--tokenizer '{source}' does not exist.", source);
        }
        var copied = TokenizerFactory.FromFolder(folder);
        if (copied.VocabSize > config.VocabSize)
            throw new InvalidDataException($"--tokenizer '{source}' has {copied.VocabSize} ids but preset '{Name}' has vocab_size {config.VocabSize}; use a LLaMA tokenizer.");
        return true;
    }

    /// <summary>Refuses before writing anything when the drive holding <paramref name="folder"/> lacks room for the weights (+1%).</summary>
    public static void EnsureFreeSpace(string folder, long bytes)
    {
        long free;
        try { free = new DriveInfo(Path.GetFullPath(folder)).AvailableFreeSpace; }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException) { return; }
        long needed = bytes + bytes / 100 + (1L << 20);
        if (free < needed)
        {
            throw new IOException($"Not enough disk space in '{folder}': the weights need {PresetDescription.FormatBytes(needed)} but only " +
                $"{PresetDescription.FormatBytes(free)} is free. Free some space, choose another --out, or use --dtype bf16.");
        }
    }
}

/// <summary>The LLaMA presets, with the published shapes of the real models.</summary>
public static class LanguageModelPresets
{
    static readonly Lazy<int> TinyVocabSize = new(() => TinyTokenizer.Build().VocabSize);

    /// <summary>For tests: hidden 64, 2 layers, 4 heads (2 KV), its own small tokenizer.</summary>
    public static readonly LanguageModelPreset Tiny = new("tiny", "test-sized LLaMA (hidden 64, 2 layers, 4 heads / 2 KV) with a small BPE tokenizer",
        () => Llama(vocab: TinyVocabSize.Value, hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, context: 512),
        ScalarType.Float32, () => TinyTokenizer.Build());

    /// <summary>109.5M parameters: GPT-2-small widths with LLaMA blocks and a tied 32000-id embedding.</summary>
    public static readonly LanguageModelPreset Llama100M = new("llama-100m", "~110M LLaMA (hidden 768, 12 layers, 12 heads, intermediate 2048, vocab 32000, tied)",
        () => Llama(vocab: 32000, hidden: 768, intermediate: 2048, layers: 12, heads: 12, kvHeads: 12, context: 2048, tied: true),
        ScalarType.BFloat16);

    /// <summary>TinyLlama-1.1B (TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json).</summary>
    public static readonly LanguageModelPreset TinyLlama11B = new("tinyllama-1.1b", "TinyLlama 1.1B shapes (hidden 2048, 22 layers, 32 heads / 4 KV)",
        () => Llama(vocab: 32000, hidden: 2048, intermediate: 5632, layers: 22, heads: 32, kvHeads: 4, context: 2048),
        ScalarType.BFloat16);

    public static readonly LanguageModelPreset Llama2_7B = new("llama2-7b", "Llama-2-7B shapes (hidden 4096, 32 layers, 32 heads)",
        () => Llama(vocab: 32000, hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: 32, context: 4096),
        ScalarType.BFloat16);

    public static readonly LanguageModelPreset Llama2_13B = new("llama2-13b", "Llama-2-13B shapes (hidden 5120, 40 layers, 40 heads)",
        () => Llama(vocab: 32000, hidden: 5120, intermediate: 13824, layers: 40, heads: 40, kvHeads: 40, context: 4096),
        ScalarType.BFloat16);

    public static readonly LanguageModelPreset Llama2_70B = new("llama2-70b", "Llama-2-70B shapes (hidden 8192, 80 layers, 64 heads / 8 KV, GQA)",
        () => Llama(vocab: 32000, hidden: 8192, intermediate: 28672, layers: 80, heads: 64, kvHeads: 8, context: 4096),
        ScalarType.BFloat16);

    static LlamaConfig Llama(int vocab, int hidden, int intermediate, int layers, int heads, int kvHeads, int context, bool tied = false) => new() {
        VocabSize = vocab, HiddenSize = hidden, IntermediateSize = intermediate, NumHiddenLayers = layers, NumAttentionHeads = heads,
        NumKeyValueHeads = kvHeads, MaxPositionEmbeddings = context, RmsNormEps = 1e-5, RopeTheta = 10000, TieWordEmbeddings = tied,
        BosTokenId = 1, EosTokenId = System.Text.Json.Nodes.JsonValue.Create(2), InitializerRange = 0.02,
    };
}
