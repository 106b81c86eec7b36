using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Training.Distributed;

/// <summary>
/// ZeRO-3 for a frozen language model: each of N ranks keeps 1/N of every decoder layer's frozen parameters (the
/// layer's frozen tensors flattened one after another, cut into N equal chunks, the last one zero-padded). Just before
/// layer i runs — in the forward, and in the recomputation of its checkpointed backward — the chunks are all-gathered
/// into one layer-sized buffer and the parameters are pointed at views of it (<see cref="torch.Tensor.set_"/>: no
/// copy); just after, they are pointed at empty tensors again. So a rank holds its shards plus one whole layer.
/// Trainable tensors in a layer (LoRA factors, unfrozen weights) stay whole on every rank: the optimizer side of ZeRO
/// (stage 2) partitions their state and gradients.
/// <para>The gathers are collectives: every rank must run the same layers in the same order. A rank with no sample in
/// a global micro-batch calls <see cref="JoinForward"/> and <see cref="JoinBackward"/> to take part without a batch; the backward needs gradient
/// checkpointing (else autograd would keep the gathered weights of every layer alive until the backward).</para>
/// </summary>
internal sealed class FrozenLayerShards : IDecoderLayerWeights, IDisposable
{
    readonly MpiCommunicator _comm;
    readonly LlamaModel _model;
    readonly LayerShard[] _layers;
    /// <summary>One layer's worth of gathered weights, reused by every layer (one is whole at a time).</summary>
    readonly Tensor _buffer;
    readonly Tensor _empty;
    int _whole = -1;

    /// <summary>A layer's frozen parameters with their shapes and element counts (a released parameter's own shape is
    /// [0]) and offsets in the flat layer, its chunk size, and this rank's chunk.</summary>
    sealed record LayerShard(Parameter[] Parameters, long[][] Shapes, long[] Numels, long[] Offsets, long Chunk, Tensor Own);

    public int Layers => _layers.Length;
    /// <summary>Frozen layer elements this rank keeps (its shards, padding included).</summary>
    public long ShardElements => _layers.Sum(l => l.Chunk);
    /// <summary>Frozen layer elements of the whole model.</summary>
    public long TotalElements { get; }
    public ScalarType DType { get; }

    /// <summary>Partitions the frozen parameters of <paramref name="model"/>'s decoder layers (they must be the same on
    /// every rank: the caller loads or broadcasts them first) and installs itself as the model's layer weights.</summary>
    /// <exception cref="ArgumentException">A layer has no frozen weight, or the frozen weights mix element types.</exception>
    public FrozenLayerShards(MpiCommunicator communicator, LlamaModel model)
    {
        (_comm, _model) = (communicator, model);
        var frozen = model.layers.Select(layer => layer.parameters().Where(p => !p.requires_grad).ToArray()).ToArray();
        var dtypes = frozen.SelectMany(ps => ps).Select(p => p.dtype).Distinct().ToList();
        if (dtypes.Count > 1)
            throw new ArgumentException($"distributed.zero_stage 3: the frozen decoder weights mix {string.Join(" and ", dtypes)}; load the model in one precision.");
        if (Array.FindIndex(frozen, ps => ps.Length == 0) is >= 0 and var allTrained)
            throw new ArgumentException($"distributed.zero_stage 3 partitions the frozen weights of the decoder layers, but every weight of layer {allTrained} trains (unfreeze: [\"*\"]?); use zero_stage 2.");
        DType = dtypes[0];
        int size = communicator.Size, rank = communicator.Rank;
        _layers = new LayerShard[frozen.Length];
        using (no_grad())
        {
            for (int i = 0; i < frozen.Length; i++)
            {
                using var scope = NewDisposeScope();
                var parameters = frozen[i];
                var shapes = parameters.Select(p => p.shape).ToArray();
                var numels = parameters.Select(p => p.numel()).ToArray();
                var offsets = new long[parameters.Length];
                long total = 0;
                for (int k = 0; k < parameters.Length; k++) { offsets[k] = total; total += numels[k]; }
                TotalElements += total;
                long chunk = (total + size - 1) / size;
                var own = zeros(chunk, DType);
                // This rank's chunk, tensor by tensor: only the parts of the tensors that fall into it are copied.
                long start = rank * chunk, end = Math.Min(total, start + chunk);
                for (int k = 0; k < parameters.Length; k++)
                {
                    long from = Math.Max(start, offsets[k]), to = Math.Min(end, offsets[k] + numels[k]);
                    if (from >= to) continue;
                    own.narrow(0, from - start, to - from).copy_(parameters[k].detach().reshape(-1).narrow(0, from - offsets[k], to - from));
                }
                _layers[i] = new LayerShard(parameters, shapes, numels, offsets, chunk, own.DetachFromDisposeScope());
            }
            _buffer = empty(_layers.Max(l => l.Chunk) * size, DType).DetachFromDisposeScope();
            _empty = empty(0, DType).DetachFromDisposeScope();
            foreach (var layer in _layers) Release(layer);
        }
        // The whole layers just freed went back to the C allocator, which keeps them unless asked.
        VisualChat.Weights.TensorMemory.ReturnFreePages();
        model.LayerWeights = this;
    }

    public IDisposable Materialize(int layer)
    {
        if (_whole >= 0) throw new InvalidOperationException($"ZeRO-3: layer {layer} was asked for while layer {_whole} is still whole.");
        var shard = _layers[layer];
        long total = shard.Chunk * _comm.Size;
        using (no_grad())
        using (NewDisposeScope())
        {
            var gathered = _buffer.narrow(0, 0, total);
            gathered.narrow(0, _comm.Rank * shard.Chunk, shard.Chunk).copy_(shard.Own);
            _comm.AllGatherBytesInPlace(gathered);
            for (int k = 0; k < shard.Parameters.Length; k++)
                shard.Parameters[k].set_(_buffer.narrow(0, shard.Offsets[k], shard.Numels[k]).view(shard.Shapes[k]));
        }
        _whole = layer;
        return new WholeLayer(this, layer);
    }

    /// <summary>For a rank with no sample in a global micro-batch: its part in the gathers of the others' forward,
    /// layer by layer in order.</summary>
    public void JoinForward()
    {
        for (int i = 0; i < _layers.Length; i++) Materialize(i).Dispose();
    }

    /// <summary>As <see cref="JoinForward"/> for the others' checkpointed backward (layers in reverse order).</summary>
    public void JoinBackward()
    {
        for (int i = _layers.Length - 1; i >= 0; i--) Materialize(i).Dispose();
    }

    void Release(LayerShard shard)
    {
        using (no_grad())
        {
            foreach (var parameter in shard.Parameters) parameter.set_(_empty);
        }
    }

    sealed class WholeLayer(FrozenLayerShards owner, int layer) : IDisposable
    {
        bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            owner.Release(owner._layers[layer]);
            owner._whole = -1;
        }
    }

    /// <summary>Frees the shards. The partitioned parameters stay empty (shape [0]): after a ZeRO-3 run the model is not
    /// usable in this process; load it again (checkpoints hold the trained tensors, the base folder the rest).</summary>
    public void Dispose()
    {
        if (ReferenceEquals(_model.LayerWeights, this)) _model.LayerWeights = null;
        foreach (var layer in _layers) layer.Own.Dispose();
        _buffer.Dispose();
        _empty.Dispose();
    }
}
