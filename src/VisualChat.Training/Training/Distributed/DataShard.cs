namespace VisualChat.Training.Distributed;

/// <summary>
/// Which part of the data one rank reads. Batches are planned globally, <see cref="Count"/> × per-device batch samples
/// at a time, from the same (seed, epoch) shuffle whatever the rank count; rank r takes samples [r·B, (r+1)·B) of each
/// global batch, so the ranks' shards are disjoint and together are exactly the batch one process with batch Count·B
/// would train on. The last, short global batch may leave a rank with nothing (the trainer still joins its collectives).
/// Evaluation batches go round-robin: rank r evaluates batches r, r + Count, ….
/// </summary>
public sealed record DataShard(int Rank, int Count)
{
    /// <summary>One process reading everything.</summary>
    public static readonly DataShard Whole = new(0, 1);

    public int[] Slice(int[] globalBatch, int perRank)
    {
        int start = Math.Min(globalBatch.Length, Rank * perRank);
        return globalBatch[start..Math.Min(globalBatch.Length, start + perRank)];
    }

    public bool OwnsEvalBatch(int index) => index % Count == Rank;
}
