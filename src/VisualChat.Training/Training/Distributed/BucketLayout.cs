namespace VisualChat.Training.Distributed;

/// <summary>
/// How the trainable tensors are laid out for collectives: in order, packed into buckets of about bucket_mb (a tensor
/// never straddles two; one larger than a bucket gets its own), each bucket padded to a multiple of the rank count and
/// cut into as many equal chunks. Rank r owns chunk r of every bucket: the part of the gradient it receives from a
/// reduce-scatter, of the optimizer state it keeps (ZeRO-1/2), and of the parameters it sends in the all-gather.
/// Bucketing bounds the flat buffers a collective needs to bucket_mb, whatever the model size.
/// </summary>
public sealed class BucketLayout
{
    /// <summary>A run of consecutive tensors [First, First + Count) at <see cref="Offsets"/> inside a flat buffer of
    /// <see cref="Size"/> floats (padding included), cut into chunks of <see cref="Chunk"/> floats.</summary>
    public sealed record Bucket(int First, int Count, long[] Offsets, long Size, long Chunk);

    /// <summary>The elements [<see cref="Start"/>, Start + <see cref="Length"/>) of tensor <see cref="Tensor"/> (flattened)
    /// that this rank owns, at <see cref="ChunkOffset"/> inside its chunk of <see cref="Bucket"/>.</summary>
    public sealed record Piece(int Tensor, int Bucket, long Start, long Length, long ChunkOffset);

    public IReadOnlyList<Bucket> Buckets { get; }
    public IReadOnlyList<long> Numels { get; }
    public int Ranks { get; }
    /// <summary>Bucket index of every tensor.</summary>
    public IReadOnlyList<int> BucketOf { get; }

    public BucketLayout(IReadOnlyList<long> numels, long bucketElements, int ranks)
    {
        if (ranks < 1) throw new ArgumentOutOfRangeException(nameof(ranks), ranks, "at least one rank");
        if (bucketElements < 1) throw new ArgumentOutOfRangeException(nameof(bucketElements), bucketElements, "at least one element per bucket");
        (Numels, Ranks) = (numels, ranks);
        var buckets = new List<Bucket>();
        var bucketOf = new int[numels.Count];
        int first = 0;
        while (first < numels.Count)
        {
            var offsets = new List<long>();
            long used = 0;
            int i = first;
            while (i < numels.Count && (offsets.Count == 0 || used + numels[i] <= bucketElements))
            {
                offsets.Add(used);
                used += numels[i];
                bucketOf[i] = buckets.Count;
                i++;
            }
            long chunk = (used + ranks - 1) / ranks;
            buckets.Add(new Bucket(first, i - first, offsets.ToArray(), chunk * ranks, chunk));
            first = i;
        }
        Buckets = buckets;
        BucketOf = bucketOf;
    }

    /// <summary>The pieces of every tensor that <paramref name="rank"/> owns (at most one per tensor), in tensor order.</summary>
    public IReadOnlyList<Piece> Pieces(int rank)
    {
        var pieces = new List<Piece>();
        for (int b = 0; b < Buckets.Count; b++)
        {
            var bucket = Buckets[b];
            long chunkStart = rank * bucket.Chunk, chunkEnd = chunkStart + bucket.Chunk;
            for (int k = 0; k < bucket.Count; k++)
            {
                int tensor = bucket.First + k;
                long start = Math.Max(chunkStart, bucket.Offsets[k]);
                long end = Math.Min(chunkEnd, bucket.Offsets[k] + Numels[tensor]);
                if (end > start) pieces.Add(new Piece(tensor, b, start - bucket.Offsets[k], end - start, start - chunkStart));
            }
        }
        return pieces;
    }

    /// <summary>The rank that owns element 0 of <paramref name="tensor"/> (it reports the tensor's optimizer step count).</summary>
    public int OwnerOfFirstElement(int tensor)
    {
        var bucket = Buckets[BucketOf[tensor]];
        return (int)(bucket.Offsets[tensor - bucket.First] / bucket.Chunk);
    }
}
