using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// What every decoder layer's attention needs to know about the current forward pass, and everything the kernel
/// derives from it for that forward. Whoever creates the context (the decoder, once per forward, and gradient
/// checkpointing once per recomputed layer) disposes it when the forward is over, which frees <see cref="KernelState"/>.
/// </summary>
public sealed class AttentionContext : IDisposable
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
    /// <summary>Per-forward data for a kernel that the decoder does not interpret (e.g. <see cref="CrossAttentionMemory"/>).</summary>
    public IAttentionExtension? Extension { get; init; }

    /// <summary>Set by <see cref="IAttentionKernel.Prepare"/>: a bool mask broadcastable to [B, heads, Lq, Lk] (true = may attend),
    /// or null when <see cref="UseCausalFastPath"/> or no mask is needed.</summary>
    public Tensor? Mask { get; set; }
    /// <summary>Set by <see cref="IAttentionKernel.Prepare"/>: let SDPA apply plain causal masking itself.</summary>
    public bool UseCausalFastPath { get; set; }
    /// <summary>Set by <see cref="IAttentionKernel.Prepare"/>: what the kernel built for this forward and shares across
    /// layers (e.g. an <see cref="MmcaPlan"/>); owned by the context, disposed with it.</summary>
    public IDisposable? KernelState
    {
        get => kernelState;
        set { kernelState?.Dispose(); kernelState = value; }
    }

    IDisposable? kernelState;

    public void Dispose() => KernelState = null;
}
