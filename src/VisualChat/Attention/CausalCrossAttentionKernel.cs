using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// The <c>causal+cross</c> attention mode: causal self-attention over the mixed text + image sequence, plus a gated
/// cross-attention (<see cref="GatedCrossAttention"/>, one per decoder layer) from each text query to the image tokens
/// strictly before it. Image and padding queries get nothing from the cross branch, nor does a text token before any
/// image. The caller sets <see cref="Memory"/> before each forward; <see cref="Prepare"/> builds the cross mask once
/// ([B, 1, Lq, M] bool, M = image tokens, nothing of size L×L) and <see cref="EndForward"/> frees it.
/// </summary>
/// <remarks>The kernel interface does not say which layer calls it, so layers are counted: decoder layers call
/// <see cref="Attend"/> once each, in order, after <see cref="Prepare"/>.</remarks>
public sealed class CausalCrossAttentionKernel(ModuleList<GatedCrossAttention> layers) : IAttentionKernel, IDisposable
{
    int nextLayer;
    Tensor? crossMask;
    Tensor? textSeesImage;

    public ModuleList<GatedCrossAttention> Layers { get; } = layers;

    /// <summary>Image tokens the next forward may attend to (cached ones included); null = none.</summary>
    public CrossAttentionMemory? Memory { get; set; }

    public void Prepare(AttentionContext context)
    {
        EndForward();
        nextLayer = 0;
        CausalAttentionKernel.Instance.Prepare(context);
        if (Memory is not { } memory || memory.Slots.shape[1] == 0) return;
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
        crossMask = allowed.logical_or(sees.logical_not()).unsqueeze(1).DetachFromDisposeScope();
        textSeesImage = sees.to(ScalarType.Float32).unsqueeze(1).DetachFromDisposeScope();
    }

    public Tensor Attend(Tensor q, Tensor k, Tensor v, AttentionContext context)
    {
        int layer = nextLayer++ % Layers.Count;
        var self = CausalAttentionKernel.Instance.Attend(q, k, v, context);
        if (crossMask is null || Memory is null) return self;
        using var scope = NewDisposeScope();
        var cross = Layers[layer].forward(q, Memory.Embeddings.to(q.dtype), crossMask) * textSeesImage!.to(q.dtype);
        return self.add(cross, TorchScalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>Frees the masks of the finished forward.</summary>
    public void EndForward()
    {
        crossMask?.Dispose(); crossMask = null;
        textSeesImage?.Dispose(); textSeesImage = null;
    }

    public void Dispose() => EndForward();
}
