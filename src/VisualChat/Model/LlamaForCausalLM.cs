using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// HF <c>LlamaForCausalLM</c>. With tie_word_embeddings there is no lm_head module: logits use embed_tokens' weight,
/// and state_dict() has no <c>lm_head.weight</c>, exactly like HF checkpoints of tied models.
/// </summary>
public sealed class LlamaForCausalLM : nn.Module<CausalLMInput, CausalLMOutput>, ICausalLM
{
    public readonly LlamaModel model;
    public readonly Linear? lm_head;

    public LlamaConfig Config { get; }

    /// <summary>Random init as HF's _init_weights: N(0, initializer_range) for Linear and Embedding (zero biases, zero
    /// padding row), ones for norms. <paramref name="seed"/> makes the weights reproducible.</summary>
    public LlamaForCausalLM(LlamaConfig config, long? seed = null) : base(nameof(LlamaForCausalLM))
    {
        Config = config;
        model = new LlamaModel(config);
        if (!config.TieWordEmbeddings) lm_head = nn.Linear(config.HiddenSize, config.VocabSize, hasBias: false);
        RegisterComponents();
        InitializeWeights(seed);
    }

    public IAttentionKernel AttentionKernel { get => model.AttentionKernel; set => model.AttentionKernel = value; }

    void InitializeWeights(long? seed)
    {
        using var noGrad = no_grad();
        using var generator = seed is { } s ? new Generator((ulong)s) : null;
        foreach (var (name, parameter) in named_parameters()) {
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) nn.init.ones_(parameter);
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) nn.init.zeros_(parameter);
            // TorchSharp's init.normal_ ignores its generator argument, so draw explicitly to honour the seed.
            else {
                using var scope = NewDisposeScope();
                parameter.copy_(randn(parameter.shape, dtype: ScalarType.Float32, generator: generator) * Config.InitializerRange);
            }
        }
        if (Config.PadTokenId is int pad && pad >= 0 && pad < Config.VocabSize) model.embed_tokens.weight!.select(0, pad).zero_();
    }

    /// <summary>[vocab, hidden]: lm_head's weight, or embed_tokens' when tied.</summary>
    public Tensor OutputEmbeddingWeight => lm_head?.weight ?? model.embed_tokens.weight!;

    public override CausalLMOutput forward(CausalLMInput input)
    {
        using var scope = NewDisposeScope();
        var decoded = model.forward(input);
        var hidden = decoded.LastHiddenState;
        var head = input.LastTokenLogitsOnly ? hidden.narrow(1, hidden.shape[1] - 1, 1) : hidden;
        var logits = nn.functional.linear(head, OutputEmbeddingWeight);
        return new CausalLMOutput(
            logits.MoveToOuterDisposeScope(),
            input.OutputHiddenStates ? hidden.MoveToOuterDisposeScope() : null,
            decoded.Cache);
    }

    public CausalLMOutput Forward(CausalLMInput input) => forward(input);

    public Tensor Embed(Tensor inputIds) => model.embed_tokens.forward(inputIds);

    /// <summary>A fresh cache sized for this model.</summary>
    public KVCache CreateCache(long capacity = 256) => new(Config.NumHiddenLayers, capacity);
}
