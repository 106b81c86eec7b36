using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Attention;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// HF <c>LlamaForCausalLM</c>. With tie_word_embeddings there is no lm_head module: logits use embed_tokens' weight,
/// and state_dict() has no <c>lm_head.weight</c>, exactly like HF checkpoints of tied models.
/// </summary>
public sealed partial class LlamaForCausalLM : nn.Module<CausalLMInput, CausalLMOutput>, ICausalLM, ICausalDecoder
{
    public readonly LlamaModel model;
    /// <summary>The untied output head: a <see cref="Linear"/>, or a <see cref="QuantizedLinear"/> in a quantized model;
    /// null when tied to embed_tokens.</summary>
    public readonly nn.Module<Tensor, Tensor>? lm_head;

    public LlamaConfig Config { get; }

    /// <summary>Random init as HF's _init_weights: N(0, initializer_range) for Linear and Embedding (zero biases, zero
    /// padding row), ones for norms, drawn from the model's own generator seeded with <paramref name="seed"/> (the same
    /// seed gives the same weights whatever else uses libtorch's global generator).</summary>
    public LlamaForCausalLM(LlamaConfig config, long? seed = null) : this(config, seed, initialize: true) { }

    /// <param name="initialize">False skips every random init (the weights are uninitialised memory) because they are
    /// about to be loaded; only <see cref="FromPretrained"/>-style callers should pass it.</param>
    public LlamaForCausalLM(LlamaConfig config, long? seed, bool initialize) : base(nameof(LlamaForCausalLM))
    {
        Config = config;
        model = new LlamaModel(config, initialize);
        if (!config.TieWordEmbeddings) lm_head = LlamaLinear.Create(config, config.HiddenSize, config.VocabSize, hasBias: false, initialize);
        RegisterComponents();
        if (initialize) InitializeWeights(seed);
    }

    /// <summary>See <see cref="LlamaModel.GradientCheckpointing"/>.</summary>
    public bool GradientCheckpointing { get => model.GradientCheckpointing; set => model.GradientCheckpointing = value; }

    /// <summary>
    /// Loads a HF LLaMA folder: config.json plus model.safetensors, a sharded safetensors index, or pytorch_model.bin.
    /// The compute dtype is <paramref name="dtype"/> (default: the config's torch_dtype) as <see cref="DevicePolicy"/>
    /// allows on <paramref name="device"/> — fp32 on CPU. Tensors are converted one by one while loading, so a bf16
    /// checkpoint never exists twice in memory. Loading is strict: a missing, unexpected or wrongly shaped tensor throws
    /// naming it; only a tied model ignores an <c>lm_head.weight</c> that some exporters still write.
    /// </summary>
    /// <param name="memoryMap">Tensors stored in the compute dtype (fp32 weights, a q8 model's int8 blocks and scales)
    /// are used in place from a private memory mapping of the safetensors files rather than copied: loading takes next
    /// to no time and memory, and the pages are read when first used. False copies every tensor.</param>
    public static LlamaForCausalLM FromPretrained(string folder, Device? device = null, ScalarType? dtype = null, bool memoryMap = true)
    {
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Model folder '{folder}' does not exist; pass a folder holding config.json and the weights.");
        var config = LlamaConfig.Load(Path.Combine(folder, "config.json"));
        device ??= CPU;
        var compute = DevicePolicy.ComputeDType(device, dtype ?? DevicePolicy.ParseDType(config.StorageDtype));
        using var source = TensorFiles.Open(folder);
        var model = new LlamaForCausalLM(config, seed: null, initialize: false);
        try {
            // A quantized model computes in fp32 around its int8 weights.
            if (compute != ScalarType.Float32 && !model.IsQuantized) model.to(compute);
            if (device.type != DeviceType.CPU) model.to(device);
            var options = new LoadOptions {
                IgnoreUnexpected = config.TieWordEmbeddings ? new HashSet<string> { "lm_head.weight" } : null,
                MemoryMap = memoryMap,
            };
            StateDict.Load(model, source, options);
        } catch {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }

    /// <summary>
    /// Writes config.json (torch_dtype = the saved dtype) and model.safetensors, or shards of at most
    /// <paramref name="maxShardBytes"/> with model.safetensors.index.json. Earlier weight files in the folder are removed
    /// so the loader cannot pick a stale one. The tokenizer is saved separately (<c>SentencePieceTokenizer.Save</c>).
    /// </summary>
    public void SavePretrained(string folder, ScalarType? dtype = null, long maxShardBytes = DefaultMaxShardBytes)
    {
        var stored = dtype ?? OutputEmbeddingWeight.dtype;
        Directory.CreateDirectory(folder);
        RemoveWeightFiles(folder);
        var config = Config.Clone();
        config.TorchDtype = DevicePolicy.DTypeName(stored);
        config.Dtype = null;
        config.Save(Path.Combine(folder, "config.json"));
        StateDict.Save(this, folder, stored, maxShardBytes);
    }

    /// <summary>5 GB, transformers' default shard size.</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    /// <summary>Deletes model.safetensors, its shards and index, and pytorch_model*.bin files from <paramref name="folder"/>.</summary>
    public static void RemoveWeightFiles(string folder)
    {
        foreach (var pattern in new[] { "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json" })
            foreach (var file in Directory.GetFiles(folder, pattern)) File.Delete(file);
    }

    public IAttentionKernel AttentionKernel { get => model.AttentionKernel; set => model.AttentionKernel = value; }

    void InitializeWeights(long? seed)
    {
        using var noGrad = no_grad();
        using var generator = GeneratorInit.Create(seed);
        using var initializerRange = Config.InitializerRange.ToScalar();   // held: see TorchScalars
        foreach (var (name, parameter) in named_parameters()) {
            if (name.EndsWith("norm.weight", StringComparison.Ordinal))
            {
                nn.init.ones_(parameter);
            }
            else if (name.EndsWith(".bias", StringComparison.Ordinal))
            {
                nn.init.zeros_(parameter);
            }
            // TorchSharp's init.normal_ ignores its generator argument, so draw explicitly to honour the seed.
            else {
                using var scope = NewDisposeScope();
                parameter.copy_(randn(parameter.shape, dtype: ScalarType.Float32, generator: generator).mul(initializerRange));
            }
        }
        if (Config.PadTokenId is int pad && pad >= 0 && pad < Config.VocabSize) model.embed_tokens.weight!.select(0, pad).zero_();
    }

    /// <summary>[vocab, hidden]: lm_head's weight, or embed_tokens' when tied.</summary>
    public Tensor OutputEmbeddingWeight => lm_head switch {
        null => model.embed_tokens.weight!,
        Linear linear => linear.weight!,
        _ => throw new InvalidOperationException("This model's lm_head is quantized (q8/q4): it has no float weight to train, merge or save in another dtype; work from the float folder it was quantized from."),
    };

    /// <summary>True when the decoder's projections and lm_head are q8 or q4 (<see cref="LlamaConfig.Quantization"/>).</summary>
    public bool IsQuantized => Config.Quantization is not null;

    public override CausalLMOutput forward(CausalLMInput input)
    {
        using var scope = NewDisposeScope();
        var decoded = model.forward(input);
        var hidden = decoded.LastHiddenState;
        var head = input.LastTokenLogitsOnly ? hidden.narrow(1, hidden.shape[1] - 1, 1) : hidden;
        var logits = lm_head is QuantizedLinear quantized ? quantized.forward(head) : nn.functional.linear(head, OutputEmbeddingWeight);
        return new CausalLMOutput(
            logits.MoveToOuterDisposeScope(),
            input.OutputHiddenStates ? hidden.MoveToOuterDisposeScope() : null,
            decoded.Cache);
    }

    public CausalLMOutput Forward(CausalLMInput input) => forward(input);

    /// <summary>The training loss for <paramref name="labels"/> [B, L] (see <see cref="CausalLMLoss"/>): the head runs only
    /// on positions that have a target.</summary>
    public (Tensor Loss, long Targets) Loss(CausalLMInput input, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var (loss, count) = CausalLMLoss.Shifted(model.forward(input).LastHiddenState, labels, OutputEmbeddingWeight);
        return (loss.MoveToOuterDisposeScope(), count);
    }

    public Tensor Embed(Tensor inputIds) => model.embed_tokens.forward(inputIds);

    /// <summary>A fresh cache sized for this model.</summary>
    public KVCache CreateCache(long capacity = 256) => new(Config.NumHiddenLayers, capacity);
}
