using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// The <c>causal+cross</c> attention mode: causal self-attention over the mixed text + image sequence, plus a gated
/// cross-attention (<see cref="GatedCrossAttention"/>, one per decoder layer, owned by the model) from each text query
/// to the image tokens strictly before it. Image and padding queries get nothing from the cross branch, nor does a
/// text token before any image. The forward's <see cref="AttentionContext.Extension"/> carries the
/// <see cref="CrossAttentionMemory"/>; <see cref="Prepare"/> builds the cross mask once ([B, 1, Lq, M] bool, M = image
/// tokens, nothing of size L×L) into the context, which frees it with the forward.
/// </summary>
/// <param name="layers">The model's cross-attention layers, indexed by decoder layer.</param>
public sealed class CausalCrossAttentionKernel(IList<GatedCrossAttention> layers) : IAttentionKernel
{
    public IList<GatedCrossAttention> Layers { get; } = layers;

    /// <summary>One forward's cross-attention inputs: the memory and the masks derived from it.</summary>
    sealed class CrossState(CrossAttentionMemory memory, Tensor mask, Tensor textSeesImage) : IDisposable
    {
        public CrossAttentionMemory Memory { get; } = memory;
        public Tensor Mask { get; } = mask;
        public Tensor TextSeesImage { get; } = textSeesImage;
        public void Dispose() { Mask.Dispose(); TextSeesImage.Dispose(); }
    }

    public void Prepare(AttentionContext context)
    {
        CausalAttentionKernel.Instance.Prepare(context);
        context.KernelState = null;
        CrossAttentionMemory? memory = context.Extension switch {
            null => null,
            CrossAttentionMemory m => m,
            var other => throw new ArgumentException($"The causal+cross kernel reads a CrossAttentionMemory as the forward's attention extension, not a {other.GetType().Name}."),
        };
        if (memory is null || memory.Slots.shape[1] == 0) return;
        using var scope = NewDisposeScope();
        var device = context.QueryPositions.device;
        long batch = context.QueryPositions.shape[0];
        if (memory.Slots.shape[0] != batch)
            throw new ArgumentException($"CrossAttentionMemory holds {memory.Slots.shape[0]} rows but the forward has batch size {batch}.");
        // Scalars held (TorchScalars, using locals): TorchSharp does not keep them alive during the native call.
        using var start = context.PastLength.ToScalar();
        using var stop = context.KeyLength.ToScalar();
        var querySlots = arange(start, stop, TorchScalars.One, dtype: ScalarType.Int64, device: device).view(1, -1, 1);
        var allowed = memory.Slots.to(device).unsqueeze(1).lt(querySlots);                        // [B, Lq, M]
        if (context.TokenModality is { } modality) {
            var queryIsText = modality.narrow(1, context.PastLength, context.QueryLength).eq(TokenModalityScalars.Text);
            allowed = allowed.logical_and(queryIsText.unsqueeze(2));
        }
        var sees = allowed.any(-1, keepdim: true);                                                   // [B, Lq, 1]
        context.KernelState = new CrossState(memory,
            allowed.logical_or(sees.logical_not()).unsqueeze(1).DetachFromDisposeScope(),
            sees.to(context.ComputeType).unsqueeze(1).DetachFromDisposeScope());
    }

    public Tensor Attend(Tensor q, Tensor k, Tensor v, int layerIndex, AttentionContext context)
    {
        var self = CausalAttentionKernel.Instance.Attend(q, k, v, layerIndex, context);
        if (context.KernelState is not CrossState state) return self;
        if (layerIndex < 0 || layerIndex >= Layers.Count)
            throw new ArgumentOutOfRangeException(nameof(layerIndex), $"The causal+cross kernel has {Layers.Count} cross-attention layers; layer {layerIndex} has none.");
        using var scope = NewDisposeScope();
        var cross = Layers[layerIndex].forward(q, state.Memory.Embeddings.to(q.dtype), state.Mask) * state.TextSeesImage.to(q.dtype);
        return self.add(cross, TorchScalars.One).MoveToOuterDisposeScope();
    }
}
