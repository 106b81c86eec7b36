using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// What every decoder layer's attention needs to know about the current forward pass. The model builds one per
/// forward; the kernel's <see cref="IAttentionKernel.Prepare"/> turns it into a mask once, shared by all layers.
/// </summary>
public sealed class AttentionContext
{
    /// <summary>Position ids of the new (query) tokens, [B, Lq].</summary>
    public required Tensor QueryPositions { get; init; }
    /// <summary>Key padding over cached + new positions, [B, Lk] bool (true = real token); null when nothing is padded.</summary>
    public Tensor? KeyPaddingMask { get; init; }
    /// <summary>How many positions were already in the KV cache before this forward.</summary>
    public long PastLength { get; init; }
    public long QueryLength { get; init; }
    public long KeyLength => PastLength + QueryLength;
    /// <summary>Per-token modality over cached + new positions, [B, Lk] (e.g. 0 text, 1 image); null for text-only.</summary>
    public Tensor? TokenModality { get; init; }
    /// <summary>The dtype queries, keys and values are computed in (the model's); kernels build their float multipliers in it.</summary>
    public ScalarType ComputeType { get; init; } = ScalarType.Float32;
    /// <summary>Room for data a future kernel needs and the model does not know about.</summary>
    public object? Extension { get; init; }

    /// <summary>Set by <see cref="IAttentionKernel.Prepare"/>: a bool mask broadcastable to [B, heads, Lq, Lk] (true = may attend),
    /// or null when <see cref="UseCausalFastPath"/> or no mask is needed.</summary>
    public Tensor? Mask { get; set; }
    /// <summary>Set by <see cref="IAttentionKernel.Prepare"/>: let SDPA apply plain causal masking itself.</summary>
    public bool UseCausalFastPath { get; set; }
}
