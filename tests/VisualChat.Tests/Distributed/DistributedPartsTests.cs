using VisualChat.Training;
using VisualChat.Training.Distributed;

namespace VisualChat.Tests.Distributed;

/// <summary>The parts of distributed training that need no MPI: bucket layout, data shards, config keys.</summary>
public sealed class DistributedPartsTests
{
    [Theory]
    [InlineData(1, 10)]
    [InlineData(2, 10)]
    [InlineData(3, 7)]
    [InlineData(4, 1000)]
    public void EveryElementHasExactlyOneOwner(int ranks, long bucketElements)
    {
        long[] numels = [5, 12, 1, 30, 7, 7, 2];
        var layout = new BucketLayout(numels, bucketElements, ranks);
        var owners = numels.Select(n => new int[n]).ToArray();
        for (int rank = 0; rank < ranks; rank++)
        {
            foreach (var piece in layout.Pieces(rank))
            {
                var bucket = layout.Buckets[piece.Bucket];
                Assert.InRange(piece.ChunkOffset + piece.Length, 1, bucket.Chunk);
                // A piece sits at its place in the bucket: chunk start + offset in chunk = tensor offset + start.
                Assert.Equal(bucket.Offsets[piece.Tensor - bucket.First] + piece.Start, rank * bucket.Chunk + piece.ChunkOffset);
                for (long i = piece.Start; i < piece.Start + piece.Length; i++) owners[piece.Tensor][i]++;
            }
        }

        Assert.All(owners, o => Assert.All(o, count => Assert.Equal(1, count)));
        foreach (var bucket in layout.Buckets)
        {
            Assert.Equal(0, bucket.Size % ranks);
            Assert.True(bucket.Count == 1 || bucket.Offsets[^1] + numels[bucket.First + bucket.Count - 1] <= bucketElements, "only a single tensor may exceed a bucket");
        }
        for (int t = 0; t < numels.Length; t++)
            Assert.Contains(layout.Pieces(layout.OwnerOfFirstElement(t)), p => p.Tensor == t && p.Start == 0);
    }

    [Fact]
    public void ShardsSplitEachGlobalBatchDisjointly()
    {
        int[] global = [9, 4, 7, 1, 0];
        var shards = Enumerable.Range(0, 3).Select(r => new DataShard(r, 3).Slice(global, 2)).ToList();
        Assert.Equal([9, 4], shards[0]);
        Assert.Equal([7, 1], shards[1]);
        Assert.Equal([0], shards[2]);
        Assert.Empty(new DataShard(2, 3).Slice([5, 6], 2));
        Assert.Equal([0, 2, 4], Enumerable.Range(0, 6).Where(new DataShard(0, 2).OwnsEvalBatch));
    }

    [Theory]
    [InlineData("\"zero_stage\": 4", "distributed.zero_stage", "0, 1, 2 or 3")]
    [InlineData("\"zero_stage\": -1", "distributed.zero_stage", "0, 1, 2 or 3")]
    [InlineData("\"bucket_mb\": 0", "distributed.bucket_mb", "(0, 4096]")]
    [InlineData("\"zero_stages\": 1", "zero_stages", "")]
    public void BadDistributedSettingsNameTheKey(string setting, string key, string hint)
    {
        var error = Assert.Throws<TrainingConfigException>(() => TrainingConfig.Parse($"{{\"distributed\": {{{setting}}}}}"));
        Assert.Contains(key, error.Message);
        Assert.Contains(hint, error.Message);
    }

    [Fact]
    public void DistributedSettingsParseAndMayChangeOnResume()
    {
        var config = TrainingConfig.Parse("{\"distributed\": {\"zero_stage\": 2, \"bucket_mb\": 8}}", "test", ["distributed.bucket_mb=4"]);
        Assert.Equal(2, config.Distributed.ZeroStage);
        Assert.Equal(4, config.Distributed.BucketMb);
        var differences = TrainingConfig.Differences(new TrainingConfig(), config);
        Assert.All(differences, d => Assert.True(d.Safe, d.Key));
        Assert.Equal(["distributed.bucket_mb", "distributed.zero_stage"], differences.Select(d => d.Key));
    }
}
