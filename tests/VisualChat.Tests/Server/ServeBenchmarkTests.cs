using VisualChat.Server;

namespace VisualChat.Tests.Server;

/// <summary>The load generator of <c>vchat bench serve</c> against the tiny preset: every request answered, counts add up.</summary>
public sealed class ServeBenchmarkTests(ServerTestHost host) : IClassFixture<ServerTestHost>
{
    [Fact]
    public async Task ConcurrentConversations_AllAnswered_WithReuse()
    {
        await using var server = await host.StartAsync(o => o with { MaxBatch = 2, MaxQueue = 2 });
        var rows = await ServeBenchmark.RunAsync(server, [1, 2], rounds: 3, images: 2, maxTokens: 4, seed: 3);
        Assert.Equal([1, 2], rows.Select(r => r.Concurrency));
        Assert.Equal([3, 6], rows.Select(r => r.Requests));
        Assert.All(rows, r => Assert.Equal(0, r.Errors));
        Assert.All(rows, r => Assert.InRange(r.Tokens, r.Requests, 4L * r.Requests));
        Assert.All(rows, r => Assert.False(double.IsNaN(r.Round3TtftP50)));
        // Rounds 2 and 3 of every conversation extend a cached conversation.
        Assert.True(server.Metrics.PositionsReused > 0);
    }

    /// <summary>Conversations whose states exceed --kv-cache-mb push the least recently used out, counted in /metrics,
    /// and every request is still answered (an evicted conversation is prefilled again).</summary>
    [Fact]
    public async Task ACacheBudgetSmallerThanTheConversations_Evicts_AndCountsIt()
    {
        await using var server = await host.StartAsync(o => o with { MaxBatch = 4, MaxQueue = 4, KvCacheMb = 1 });
        var rows = await ServeBenchmark.RunAsync(server, [4, 4], rounds: 3, images: 2, maxTokens: 4, seed: 5);
        Assert.All(rows, r => Assert.Equal(0, r.Errors));
        long evictions = Interlocked.Read(ref server.Metrics.CacheEvictions);
        Assert.True(evictions > 0, "the states of nine conversations do not fit in 1 MiB");
        Assert.Contains($"vchat_kv_cache_evictions_total {evictions}", server.Metrics.ToPrometheus());
    }

    [Fact]
    public void Bmp_DecodesToItsSize()
    {
        var image = VisualChat.Vision.Imaging.ImageLoader.Load(ServeBenchmark.Bmp(5, 40), "bench.bmp");
        Assert.Equal(40, image.Width);
        Assert.Equal(40, image.Height);
    }
}
