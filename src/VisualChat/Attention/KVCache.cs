using TorchSharp;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// Preallocated keys and values per layer, [B, kvHeads, capacity, headDim], written in place as tokens arrive.
/// Alongside: which cached positions are real tokens (key padding) and, when given, each position's modality.
/// A forward pass brackets its layer writes with <see cref="BeginStep"/> and <see cref="EndStep"/>.
/// </summary>
public sealed class KVCache : IDisposable
{
    readonly Tensor?[] keys;
    readonly Tensor?[] values;
    Tensor? keyPadding;     // [B, capacity] bool
    Tensor? modality;       // [B, capacity] int64
    bool anyPadding;
    long pendingLength;

    public KVCache(int numLayers, long initialCapacity = 256)
    {
        if (numLayers <= 0) throw new ArgumentOutOfRangeException(nameof(numLayers), "A KV cache needs at least one layer.");
        if (initialCapacity <= 0) throw new ArgumentOutOfRangeException(nameof(initialCapacity), "KV cache capacity must be positive.");
        keys = new Tensor?[numLayers];
        values = new Tensor?[numLayers];
        Capacity = initialCapacity;
    }

    public int NumLayers => keys.Length;
    /// <summary>Positions cached so far.</summary>
    public long Length { get; private set; }
    public long Capacity { get; private set; }
    public long BatchSize { get; private set; } = -1;
    public bool HasModality => modality is not null;

    /// <summary>Registers <paramref name="newTokens"/> new positions for a forward pass: grows storage when needed and
    /// records their padding (null = all real) and modality.</summary>
    public void BeginStep(long batchSize, long newTokens, Tensor? newKeyPadding, Tensor? newModality, Device device)
    {
        if (BatchSize >= 0 && BatchSize != batchSize)
            throw new ArgumentException($"KV cache holds batch size {BatchSize} but the input has batch size {batchSize}; Reset() the cache for a new batch.");
        BatchSize = batchSize;
        EnsureCapacity(Length + newTokens, device);
        using var scope = NewDisposeScope();
        keyPadding ??= ones(batchSize, Capacity, dtype: ScalarType.Bool, device: device).DetachFromDisposeScope();
        var paddingSlots = keyPadding.narrow(1, Length, newTokens);
        if (newKeyPadding is null)
        {
            paddingSlots.fill_(True);
        }
        else {
            paddingSlots.copy_(newKeyPadding.to(ScalarType.Bool));
            anyPadding |= !newKeyPadding.to(ScalarType.Bool).all().item<bool>();
        }
        if (newModality is not null) {
            // Positions cached before the first tagged step were untagged: text where real, padding where masked.
            modality ??= UntaggedModality(keyPadding.narrow(1, 0, Capacity), batchSize, device).DetachFromDisposeScope();
            modality.narrow(1, Length, newTokens).copy_(newModality);
        } else if (modality is not null) {
            // Untagged input means text (CausalLMInput.TokenModality); only masked positions are padding, so real
            // tokens of an untagged step after a tagged prefill are never hidden from multi-modal kernels.
            modality.narrow(1, Length, newTokens).copy_(UntaggedModality(paddingSlots, batchSize, device));
        }
        pendingLength = newTokens;
    }

    static Tensor UntaggedModality(Tensor realMask, long batchSize, Device device) =>
        full(batchSize, realMask.shape[1], TokenModalityScalars.Text, dtype: ScalarType.Int64, device: device)
            .masked_fill(realMask.logical_not(), TokenModalityScalars.Padding);

    /// <summary>Key padding over cached + pending positions [B, Length+pending], or null when no position is padding.</summary>
    public Tensor? KeyPaddingView() => anyPadding ? keyPadding!.narrow(1, 0, Length + pendingLength) : null;

    static readonly Scalar True = true.ToScalar();   // held: see TorchScalars

    public Tensor? ModalityView() => modality?.narrow(1, 0, Length + pendingLength);

    /// <summary>Writes the pending positions' k, v [B, kvHeads, L, D] for <paramref name="layer"/> and returns views of everything cached so far.</summary>
    public (Tensor keys, Tensor values) Update(int layer, Tensor k, Tensor v)
    {
        if (k.shape[2] != pendingLength)
            throw new InvalidOperationException($"KV cache layer {layer}: got {k.shape[2]} new positions but BeginStep announced {pendingLength}.");
        if (keys[layer] is null) {
            var shape = new[] { k.shape[0], k.shape[1], Capacity, k.shape[3] };
            keys[layer] = zeros(shape, dtype: k.dtype, device: k.device).DetachFromDisposeScope();
            values[layer] = zeros(shape, dtype: v.dtype, device: v.device).DetachFromDisposeScope();
        }
        var total = Length + pendingLength;
        keys[layer]!.narrow(2, Length, pendingLength).copy_(k);
        values[layer]!.narrow(2, Length, pendingLength).copy_(v);
        return (keys[layer]!.narrow(2, 0, total), values[layer]!.narrow(2, 0, total));
    }

    public void EndStep()
    {
        Length += pendingLength;
        pendingLength = 0;
    }

    /// <summary>For the fused decode step: reserves the next position of a single-sequence cache that a forward has
    /// already filled, as one real text token (its keys and values are then written straight into
    /// <see cref="LayerKeys"/>/<see cref="LayerValues"/>), and returns it; <see cref="EndStep"/> commits it. No tensor is
    /// created unless the storage has to grow.</summary>
    internal unsafe long ReserveTextPosition()
    {
        if (BatchSize != 1 || keys[0] is null || keyPadding is null || anyPadding)
            throw new InvalidOperationException("The fused decode step needs a prefilled single-sequence cache without padding.");
        EnsureCapacity(Length + 1, keys[0]!.device);
        ((bool*)TensorMemory.Pointer(keyPadding))[Length] = true;
        if (modality is not null) ((long*)TensorMemory.Pointer(modality))[Length] = (long)TokenModality.Text;
        pendingLength = 1;
        return Length;
    }

    /// <summary>For the fused decode step on an empty cache: allocates every layer's [1, kvHeads, Capacity, headDim]
    /// storage (and the key padding) as a first forward would, so a prompt can be fed token by token.</summary>
    internal void EnsureDecodeStorage(long kvHeads, long headDim, ScalarType dtype, Device device)
    {
        if (Length > 0 || keys[0] is not null) return;
        if (BatchSize >= 0 && BatchSize != 1) throw new InvalidOperationException($"KV cache holds batch size {BatchSize}; the fused decode step takes one sequence.");
        BatchSize = 1;
        for (int i = 0; i < keys.Length; i++) {
            keys[i] = zeros(new[] { 1, kvHeads, Capacity, headDim }, dtype: dtype, device: device).DetachFromDisposeScope();
            values[i] = zeros(new[] { 1, kvHeads, Capacity, headDim }, dtype: dtype, device: device).DetachFromDisposeScope();
        }
        keyPadding = ones(1, Capacity, dtype: ScalarType.Bool, device: device).DetachFromDisposeScope();
    }

    /// <summary>Whether <see cref="ReserveTextPosition"/> applies: one prefilled sequence, no padding, contiguous CPU storage.</summary>
    internal bool SupportsFusedDecode
    {
        get {
            if (BatchSize != 1 || anyPadding || keyPadding is null || pendingLength != 0) return false;
            for (int i = 0; i < keys.Length; i++)
                if (keys[i] is not { } k || !TensorMemory.IsAddressable(k) || !TensorMemory.IsAddressable(values[i]!)) return false;
            return true;
        }
    }

    /// <summary>[1, kvHeads, Capacity, headDim] storage of a layer's keys (null before the first forward).</summary>
    internal Tensor? LayerKeys(int layer) => keys[layer];
    internal Tensor? LayerValues(int layer) => values[layer];
    /// <summary>[1, Capacity] modality storage, or null when the cache is untagged.</summary>
    internal Tensor? ModalityStorage => modality;

    /// <summary>Forgets positions from <paramref name="length"/> on (e.g. to re-run a turn). Storage is kept.</summary>
    public void Crop(long length)
    {
        if (length < 0 || length > Length) throw new ArgumentOutOfRangeException(nameof(length), $"Cannot crop a KV cache of length {Length} to {length}.");
        Length = length;
        pendingLength = 0;
        if (keyPadding is not null && anyPadding) {
            using var scope = NewDisposeScope();
            anyPadding = length > 0 && !keyPadding.narrow(1, 0, length).all().item<bool>();
        }
    }

    /// <summary>Empties the cache and frees its storage; the next forward may use any batch size.</summary>
    public void Reset()
    {
        ReleaseStorage();
        Length = 0;
        pendingLength = 0;
        anyPadding = false;
    }

    void ReleaseStorage()
    {
        for (int i = 0; i < keys.Length; i++) {
            keys[i]?.Dispose(); keys[i] = null;
            values[i]?.Dispose(); values[i] = null;
        }
        keyPadding?.Dispose(); keyPadding = null;
        modality?.Dispose(); modality = null;
        BatchSize = -1;
    }

    void EnsureCapacity(long needed, Device device)
    {
        if (needed <= Capacity) return;
        long grown = Math.Max(needed, Capacity * 2);
        for (int i = 0; i < keys.Length; i++) {
            keys[i] = Grow(keys[i], 2, grown);
            values[i] = Grow(values[i], 2, grown);
        }
        keyPadding = Grow(keyPadding, 1, grown);
        modality = Grow(modality, 1, grown);
        Capacity = grown;
    }

    Tensor? Grow(Tensor? old, int dim, long capacity)
    {
        if (old is null) return null;
        var shape = old.shape.ToArray();
        shape[dim] = capacity;
        var grown = zeros(shape, dtype: old.dtype, device: old.device).DetachFromDisposeScope();
        if (Length > 0) {
            // Disposed here, not by a scope: the fused decode grows caches outside any dispose scope, and a view left
            // to the finalizer would keep the old storage alive.
            using var destination = grown.narrow(dim, 0, Length);
            using var previous = old.narrow(dim, 0, Length);
            destination.copy_(previous);
        }
        old.Dispose();
        return grown;
    }

    public void Dispose() => ReleaseStorage();
}
