using TorchSharp;
using VisualChat.Training.Distributed;
using static TorchSharp.torch;

namespace VisualChat.Training;

/// <summary>The sums over all ranks of one global micro-batch: its loss (the per-target-token mean over the whole
/// global batch), target tokens, images, whether any rank had samples, and whether any rank's loss was NaN/Inf.</summary>
internal readonly record struct GlobalMicroBatch(double Loss, long Targets, long Images, bool Present, bool NonFinite);

/// <summary>
/// The trainer's data-parallel side under mpirun: every rank trains on its shard of each global micro-batch
/// (<see cref="DataShard"/>), and this class makes the result that of one process training on the whole global batch.
/// <list type="bullet">
/// <item>The loss is a mean over target tokens, and ranks hold different numbers of them: each rank scales its
/// backward by its share of the global micro-batch's targets (<see cref="Combine"/>) and gradients are <b>summed</b>,
/// which gives Σ(per-rank loss sums) ÷ (global target count) — a plain average of per-rank means would not.</item>
/// <item>Gradients are summed in buckets of bucket_mb (<see cref="BucketLayout"/>): all-reduced (ZeRO 0 and 1) or
/// reduce-scattered so each rank keeps only its chunk (ZeRO 2 and 3). Clipping uses the global norm.</item>
/// <item>ZeRO 1 to 3: AdamW holds moments only for this rank's pieces (flat views into the fp32 master tensors), and
/// updates only them; the parameters are then all-gathered, so every rank holds the full updated weights.</item>
/// <item>Checkpoints stay in the single-process layout: the moments are gathered before rank 0 writes them, and a
/// restore slices the full moments to this rank's pieces, so a run resumes on any number of ranks.</item>
/// </list>
/// </summary>
internal sealed class DataParallel : IDisposable
{
    readonly MpiCommunicator _comm;
    readonly IReadOnlyList<(string Name, Tensor Master)> _tensors;
    readonly BucketLayout _layout;
    readonly Dictionary<string, BucketLayout.Piece> _pieces;
    readonly Dictionary<string, Tensor> _masters;
    /// <summary>One bucket's worth of floats, reused by every transient collective buffer (the ZeRO-2 gradient send
    /// buffer, the parameter all-gather): allocating and freeing a bucket-sized block per call grows the process's
    /// resident memory (the C allocator keeps the freed blocks), which would eat what ZeRO saves. Sized to the largest
    /// bucket of at most bucket_mb: a tensor larger than that has a bucket of its own, and keeping a buffer of its size
    /// resident would cancel ZeRO's saving on it (a 98 MB embedding matrix: its ZeRO-1 moments save exactly that);
    /// such a bucket gets a buffer of its own per call instead, which the allocator maps and unmaps as a whole.</summary>
    readonly Tensor _scratch;

    /// <summary>0 to 3; for the trainable tensors stage 3 is stage 2 (the frozen layers are <see cref="FrozenLayerShards"/>'s).</summary>
    public int Stage { get; }
    public MpiCommunicator Communicator => _comm;
    public int Rank => _comm.Rank;
    public int Size => _comm.Size;
    public bool IsRoot => _comm.IsRoot;
    public BucketLayout Layout => _layout;

    public DataParallel(MpiCommunicator communicator, IReadOnlyList<(string Name, Tensor Master)> masters, int zeroStage, double bucketMb)
    {
        (_comm, _tensors, Stage) = (communicator, masters, zeroStage);
        long bucketElements = Math.Max(1, (long)(bucketMb * (1 << 20)) / sizeof(float));
        _layout = new BucketLayout(masters.Select(m => m.Master.numel()).ToList(), bucketElements, communicator.Size);
        _pieces = _layout.Pieces(communicator.Rank).ToDictionary(p => masters[p.Tensor].Name, StringComparer.Ordinal);
        _masters = masters.ToDictionary(m => m.Name, m => m.Master, StringComparer.Ordinal);
        long largest = _layout.Buckets.Select(b => b.Size).Where(size => size <= bucketElements + communicator.Size).DefaultIfEmpty(0).Max();
        _scratch = empty(Math.Max(1, largest), ScalarType.Float32).DetachFromDisposeScope();
    }

    /// <summary>What AdamW updates for a master tensor: all of it (ZeRO 0), this rank's piece as a flat view of its
    /// storage (ZeRO 1, 2), or null when this rank owns none of it.</summary>
    public Tensor? Owned(string name, Tensor master)
    {
        if (Stage == 0) return master;
        if (!_pieces.TryGetValue(name, out var piece)) return null;
        return master.detach().view(-1).narrow(0, piece.Start, piece.Length).DetachFromDisposeScope();
    }

    public void Barrier() => _comm.Barrier();

    public bool AnyRank(bool flag)
    {
        Span<long> value = [flag ? 1 : 0];
        _comm.AllReduceSum(value);
        return value[0] > 0;
    }

    /// <summary>One global micro-batch's totals, from this rank's mean loss over <paramref name="targets"/> target
    /// tokens (ignored when it had no batch or a non-finite loss).</summary>
    public GlobalMicroBatch Combine(double loss, long targets, long images, bool present)
    {
        bool finite = double.IsFinite(loss);
        Span<double> values = [present && finite ? loss * targets : 0, present ? targets : 0, present ? images : 0, present ? 1 : 0, present && !finite ? 1 : 0];
        _comm.AllReduceSum(values);
        long total = (long)values[1];
        return new GlobalMicroBatch(total > 0 ? values[0] / total : 0, total, (long)values[2], values[3] > 0, values[4] > 0);
    }

    /// <summary>Token-weighted evaluation sums over all ranks.</summary>
    public (double Weighted, long Weight) SumEval(double weighted, long weight)
    {
        Span<double> values = [weighted, weight];
        _comm.AllReduceSum(values);
        return (values[0], (long)values[1]);
    }

    /// <summary>
    /// Sums the gradients of all ranks (null: this rank computed none for that tensor) and multiplies them by
    /// <paramref name="unscale"/>. Returns, by name, what AdamW needs (the full gradient for ZeRO 0, this rank's piece
    /// otherwise; tensors no rank computed a gradient for are left out, as in one process) and the global L2 norm. The
    /// buffers belong to the caller's dispose scope.
    /// </summary>
    public (Dictionary<string, Tensor> Gradients, double Norm) ReduceGradients(IReadOnlyList<Tensor?> grads, Scalar? unscale)
    {
        var present = new long[_tensors.Count];
        for (int i = 0; i < present.Length; i++) present[i] = grads[i] is null ? 0 : 1;
        _comm.AllReduceSum(present);
        var gradients = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var fullViews = new List<Tensor>();
        double ownSquares = 0;
        for (int b = 0; b < _layout.Buckets.Count; b++)
        {
            var bucket = _layout.Buckets[b];
            // ZeRO 0/1 keep the summed gradient until the step ends (AdamW reads views of it); ZeRO 2 sends it away.
            var flat = Stage < 2 ? zeros(bucket.Size, ScalarType.Float32) : Scratch(bucket.Size).zero_();
            bool ownFlat = Stage >= 2 && bucket.Size > _scratch.numel();
            for (int k = 0; k < bucket.Count; k++)
                if (grads[bucket.First + k] is { } grad) flat.narrow(0, bucket.Offsets[k], grad.numel()).copy_(grad.reshape(-1));
            Tensor reduced;
            long baseOffset;
            if (Stage < 2)
            {
                _comm.AllReduceSum(flat);
                (reduced, baseOffset) = (flat, 0);
            }
            else
            {
                reduced = empty(bucket.Chunk, ScalarType.Float32);
                _comm.ReduceScatterSum(flat, reduced);
                if (ownFlat) flat.Dispose();   // an oversize bucket's send buffer: freed now, not at the end of the step
                baseOffset = -Rank * bucket.Chunk;
            }
            if (unscale is not null) reduced.mul_(unscale);
            for (int k = 0; k < bucket.Count; k++)
            {
                int index = bucket.First + k;
                if (present[index] == 0) continue;
                var (name, master) = _tensors[index];
                if (Stage < 2) fullViews.Add(reduced.narrow(0, bucket.Offsets[k], master.numel()).view(master.shape));
                if (Stage == 0) { gradients[name] = fullViews[^1]; continue; }
                if (!_pieces.TryGetValue(name, out var piece)) continue;
                var slice = reduced.narrow(0, baseOffset + bucket.Offsets[k] + piece.Start, piece.Length);
                gradients[name] = slice;
                if (Stage >= 2)
                {
                    // A per-piece norm, not square().sum(): no piece-sized temporary lives on until the step ends.
                    double pieceNorm = slice.norm().item<float>();
                    ownSquares += pieceNorm * pieceNorm;
                }
            }
        }
        double norm;
        if (Stage < 2)
        {
            norm = fullViews.Count == 0 ? 0.0 : stack(fullViews.Select(g => g.norm()).ToArray()).norm().item<float>();
        }
        else
        {
            Span<double> squares = [ownSquares];
            _comm.AllReduceSum(squares);
            norm = Math.Sqrt(squares[0]);
        }
        return (gradients, norm);
    }

    /// <summary>A transient buffer of <paramref name="size"/> floats in the caller's dispose scope: a view of the shared
    /// scratch, or a buffer of its own for an oversize bucket.</summary>
    Tensor Scratch(long size) => size <= _scratch.numel() ? _scratch.narrow(0, 0, size) : empty(size, ScalarType.Float32);

    public void Dispose() => _scratch.Dispose();

    /// <summary>Rank 0's trainable weights to every rank, so all start from the same point whatever their own
    /// initialisation or checkpoint read did.</summary>
    public void BroadcastParameters()
    {
        using var noGrad = no_grad();
        foreach (var bucket in _layout.Buckets)
        {
            using var scope = NewDisposeScope();
            var flat = zeros(bucket.Size, ScalarType.Float32);
            for (int k = 0; k < bucket.Count; k++)
            {
                var master = _tensors[bucket.First + k].Master;
                flat.narrow(0, bucket.Offsets[k], master.numel()).copy_(master.detach().reshape(-1));
            }
            _comm.Broadcast(flat);
            for (int k = 0; k < bucket.Count; k++)
            {
                var master = _tensors[bucket.First + k].Master;
                master.detach().view(-1).copy_(flat.narrow(0, bucket.Offsets[k], master.numel()));
            }
        }
    }

    /// <summary>ZeRO 1, 2: every rank's updated pieces to every rank, so all hold the full updated masters.</summary>
    public void GatherParameters()
    {
        if (Stage == 0) return;
        using var noGrad = no_grad();
        foreach (var bucket in _layout.Buckets)
        {
            using var scope = NewDisposeScope();
            var flat = Scratch(bucket.Size);
            FillOwnChunk(bucket, flat, name => _masters[name].detach().view(-1));
            _comm.AllGatherInPlace(flat);
            for (int k = 0; k < bucket.Count; k++)
            {
                var master = _tensors[bucket.First + k].Master;
                master.detach().view(-1).copy_(flat.narrow(0, bucket.Offsets[k], master.numel()));
            }
        }
    }

    /// <summary>Copies this rank's pieces of <paramref name="bucket"/>'s tensors (flattened by <paramref name="flatOf"/>)
    /// into its chunk of <paramref name="flat"/>.</summary>
    void FillOwnChunk(BucketLayout.Bucket bucket, Tensor flat, Func<string, Tensor?> flatOf)
    {
        for (int k = 0; k < bucket.Count; k++)
        {
            var name = _tensors[bucket.First + k].Name;
            if (!_pieces.TryGetValue(name, out var piece) || flatOf(name) is not { } source) continue;
            var part = source.numel() == piece.Length ? source : source.narrow(0, piece.Start, piece.Length);
            flat.narrow(0, Rank * bucket.Chunk + piece.ChunkOffset, piece.Length).copy_(part);
        }
    }

    /// <summary>ZeRO 1, 2: the full optimizer state in the single-process layout (<c>state.{name}.exp_avg</c>,
    /// <c>.exp_avg_sq</c>, <c>.step</c>), gathered from all ranks' pieces; a collective. The tensors belong to the
    /// caller's dispose scope.</summary>
    public List<KeyValuePair<string, Tensor>> GatherOptimizerState(AdamW optimizer)
    {
        var own = optimizer.StateTensors().ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var steps = new long[_tensors.Count];
        for (int i = 0; i < steps.Length; i++)
        {
            if (_layout.OwnerOfFirstElement(i) == Rank && own.TryGetValue($"state.{_tensors[i].Name}.step", out var step))
                steps[i] = step.to(ScalarType.Int64).item<long>();
        }

        _comm.AllReduceSum(steps);
        var state = new List<KeyValuePair<string, Tensor>>();
        foreach (var bucket in _layout.Buckets)
        {
            foreach (var moment in new[] { "exp_avg", "exp_avg_sq" })
            {
                var flat = zeros(bucket.Size, ScalarType.Float32);
                FillOwnChunk(bucket, flat, name => own.GetValueOrDefault($"state.{name}.{moment}"));
                _comm.AllGatherInPlace(flat);
                for (int k = 0; k < bucket.Count; k++)
                {
                    int index = bucket.First + k;
                    if (steps[index] == 0) continue;
                    var (name, master) = _tensors[index];
                    state.Add(new($"state.{name}.{moment}", flat.narrow(0, bucket.Offsets[k], master.numel()).view(master.shape)));
                }
            }
        }
        for (int i = 0; i < steps.Length; i++)
            if (steps[i] > 0) state.Add(new($"state.{_tensors[i].Name}.step", tensor(steps[i])));
        return state;
    }

    /// <summary>ZeRO 1, 2: reads full (single-process layout) optimizer state and hands AdamW this rank's pieces of it.</summary>
    public Func<string, Tensor?> SliceOptimizerState(Func<string, Tensor?> read) => key =>
    {
        var full = read(key);
        if (Stage == 0 || full is null || !key.StartsWith("state.", StringComparison.Ordinal)) return full;
        foreach (var moment in new[] { ".exp_avg_sq", ".exp_avg" })
        {
            if (!key.EndsWith(moment, StringComparison.Ordinal)) continue;
            var name = key["state.".Length..^moment.Length];
            return _pieces.TryGetValue(name, out var piece) ? full.reshape(-1).narrow(0, piece.Start, piece.Length).clone() : null;
        }
        return full;
    };
}
