using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>The LLaMA decoder stack: embed_tokens, layers, final norm (HF <c>LlamaModel</c>).</summary>
public sealed class LlamaModel : nn.Module<CausalLMInput, DecoderOutput>
{
    public readonly Embedding embed_tokens;
    internal readonly ModuleList<LlamaDecoderLayer> layers;
    internal readonly LlamaRMSNorm norm;
    readonly LlamaRotaryEmbedding rotary_emb;

    public LlamaConfig Config { get; }
    /// <summary>RoPE's (scaled) inverse frequencies, one per rotated pair, for kernels that rotate on their own.</summary>
    internal IReadOnlyList<double> RotaryInverseFrequency => rotary_emb.InverseFrequency;
    /// <summary>The attention mode; swap it for multi-modal kernels.</summary>
    public IAttentionKernel AttentionKernel { get; set; } = CausalAttentionKernel.Instance;
    /// <summary>
    /// Recompute each decoder layer during backward instead of keeping its activations (only the layer inputs are kept).
    /// Applies in training mode with gradients enabled and no KV cache; inference is unaffected.
    /// </summary>
    public bool GradientCheckpointing { get; set; }
    /// <summary>Set while the layers' weights are partitioned (ZeRO-3): each layer is made whole just around its run.</summary>
    internal IDecoderLayerWeights? LayerWeights { get; set; }

    /// <param name="initialize">False skips the linear layers' default init (weights are loaded next).</param>
    public LlamaModel(LlamaConfig config, bool initialize = true) : base(nameof(LlamaModel))
    {
        config.Validate();
        Config = config;
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize, padding_idx: config.PadTokenId);
        layers = new ModuleList<LlamaDecoderLayer>(Enumerable.Range(0, config.NumHiddenLayers).Select(i => new LlamaDecoderLayer(config, i, initialize)).ToArray());
        norm = new LlamaRMSNorm(config.HiddenSize, config.RmsNormEps);
        rotary_emb = new LlamaRotaryEmbedding(config);
        RegisterComponents();
    }

    public override DecoderOutput forward(CausalLMInput input)
    {
        using var scope = NewDisposeScope();
        if ((input.InputIds is null) == (input.InputsEmbeds is null))
            throw new ArgumentException("CausalLMInput: give exactly one of InputIds and InputsEmbeds.", nameof(input));
        var hidden = input.InputsEmbeds ?? embed_tokens.forward(input.InputIds!);
        if (hidden.dim() != 3 || hidden.shape[2] != Config.HiddenSize)
            throw new ArgumentException($"CausalLMInput.InputsEmbeds must be [B, L, {Config.HiddenSize}], got [{string.Join(", ", hidden.shape)}].", nameof(input));
        long batch = hidden.shape[0], length = hidden.shape[1];
        var cache = input.Cache;
        long past = cache?.Length ?? 0;

        var newPadding = NewTokenPadding(input.AttentionMask, batch, past, length);
        Tensor? keyPadding;
        Tensor? modality;
        if (cache is not null) {
            cache.BeginStep(batch, length, newPadding, input.TokenModality, hidden.device);
            keyPadding = cache.KeyPaddingView();
            modality = cache.ModalityView();
        } else {
            keyPadding = newPadding is not null && !newPadding.all().item<bool>() ? newPadding : null;
            modality = input.TokenModality;
        }

        var positions = input.PositionIds ?? DefaultPositions(keyPadding, batch, past, length, hidden.device);
        var extension = input.AttentionExtension;
        // The kernel's per-forward state lives in this context and ends with the forward; a checkpointed layer's
        // backward builds its own from the tensors it saved.
        using var layerContext = LayerContext(hidden, positions, keyPadding, modality, past, cache, extension);
        bool checkpointing = GradientCheckpointing && training && cache is null && is_grad_enabled();
        try {
            for (int i = 0; i < layers.Count; i++) {
                var layer = layers[i];
                using var layerScope = NewDisposeScope();
                using var weights = LayerWeights?.Materialize(i);
                hidden = (checkpointing
                    ? DecoderLayerCheckpoint.Forward(this, i, hidden, layerContext, positions, keyPadding, modality, extension)
                    : layer.forward(hidden, layerContext)).MoveToOuterDisposeScope();
            }
        } catch {
            // A half-written step must not leave the cache claiming positions it never received in every layer.
            cache?.Crop(past);
            throw;
        }
        cache?.EndStep();
        return new DecoderOutput(norm.forward(hidden).MoveToOuterDisposeScope(), cache);
    }

    /// <summary>What every layer needs for one forward: rotary cos/sin for <paramref name="positions"/> and the kernel's
    /// prepared per-forward state. The caller disposes it when the forward (or recomputation) is over.</summary>
    internal DecoderLayerContext LayerContext(Tensor hidden, Tensor positions, Tensor? keyPadding, Tensor? modality, long past, KVCache? cache, IAttentionExtension? extension)
    {
        var attention = new AttentionContext {
            QueryPositions = positions, KeyPaddingMask = keyPadding, PastLength = past, QueryLength = hidden.shape[1], TokenModality = modality,
            ComputeType = hidden.dtype, Extension = extension,
        };
        try {
            AttentionKernel.Prepare(attention);
        } catch {
            attention.Dispose();
            throw;
        }
        var (cos, sin) = rotary_emb.forward(hidden, positions);
        return new DecoderLayerContext(cos, sin, attention, AttentionKernel, cache);
    }

    static Tensor? NewTokenPadding(Tensor? attentionMask, long batch, long past, long length)
    {
        if (attentionMask is null) return null;
        if (attentionMask.dim() != 2 || attentionMask.shape[0] != batch)
            throw new ArgumentException($"CausalLMInput.AttentionMask must be [B={batch}, L], got [{string.Join(", ", attentionMask.shape)}].");
        if (attentionMask.shape[1] == length) return attentionMask.to(ScalarType.Bool);
        if (attentionMask.shape[1] == past + length) return attentionMask.narrow(1, past, length).to(ScalarType.Bool);
        throw new ArgumentException($"CausalLMInput.AttentionMask covers {attentionMask.shape[1]} positions; expected the {length} new tokens or cached+new = {past + length}.");
    }

    /// <summary>HF: position = (number of real tokens so far) − 1; padded slots get 1. <paramref name="keyPadding"/> covers
    /// cached + new positions; the result covers the <paramref name="length"/> new ones.</summary>
    public static Tensor DefaultPositions(Tensor? keyPadding, long batch, long past, long length, Device device)
    {
        // Scalars held (TorchScalars or using locals): TorchSharp does not keep them alive during the native call.
        if (keyPadding is null)
        {
            using var start = past.ToScalar();
            using var stop = (past + length).ToScalar();
            return arange(start, stop, TorchScalars.One, dtype: ScalarType.Int64, device: device).unsqueeze(0).expand(batch, length);
        }
        var real = keyPadding.to(ScalarType.Int64);
        var counted = real.cumsum(1).sub(TorchScalars.One);
        counted = counted.masked_fill(real.eq(TorchScalars.Zero), TorchScalars.One);
        return counted.narrow(1, past, length);
    }
}
