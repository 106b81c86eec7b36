using System.Globalization;
using System.Text;

namespace VisualChat.Server;

/// <summary>Counters, gauges and histograms of the server, written in the Prometheus text format (version 0.0.4).</summary>
public sealed class ServerMetrics
{
    /// <summary>A cumulative histogram with fixed upper bounds (seconds).</summary>
    public sealed class Histogram(params double[] bounds)
    {
        readonly long[] counts = new long[bounds.Length + 1];
        double sum;
        long total;

        public void Observe(double value)
        {
            lock (counts) {
                int i = 0;
                while (i < bounds.Length && value > bounds[i]) i++;
                counts[i]++;
                sum += value;
                total++;
            }
        }

        public long Count { get { lock (counts) return total; } }

        internal void Write(StringBuilder sb, string name, string help)
        {
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE ").Append(name).Append(" histogram\n");
            lock (counts) {
                long cumulative = 0;
                for (int i = 0; i < bounds.Length; i++) {
                    cumulative += counts[i];
                    sb.Append(name).Append("_bucket{le=\"").Append(bounds[i].ToString(CultureInfo.InvariantCulture)).Append("\"} ").Append(cumulative).Append('\n');
                }
                sb.Append(name).Append("_bucket{le=\"+Inf\"} ").Append(total).Append('\n');
                sb.Append(name).Append("_sum ").Append(sum.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
                sb.Append(name).Append("_count ").Append(total).Append('\n');
            }
        }
    }

    static readonly double[] LatencyBounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    long requests, requestErrors, promptTokens, completionTokens, cancelled, chunksTotal, chunksReused, positionsReused, positionsPrefilled;
    long imagesTotal, imagesReused;

    public Histogram TimeToFirstToken { get; } = new(LatencyBounds);
    public Histogram InterTokenLatency { get; } = new(LatencyBounds);
    public Histogram BatchSize { get; } = new(1, 2, 4, 8, 16, 32, 64);
    public int QueueDepth;
    public int Running;
    public int CacheEntries;
    public long CacheBytes;
    public long CacheEvictions;
    public long ImageFeatureHits, ImageFeatureMisses;

    public void Request() => Interlocked.Increment(ref requests);
    public void Error() => Interlocked.Increment(ref requestErrors);
    public void Cancelled() => Interlocked.Increment(ref cancelled);
    public void Tokens(long prompt, long completion)
    {
        Interlocked.Add(ref promptTokens, prompt);
        Interlocked.Add(ref completionTokens, completion);
    }

    /// <summary>A request's prefix reuse: chunks and positions taken from the conversation cache versus computed.</summary>
    public void Reuse(int chunks, int reusedChunks, long positions, long reusedPositions, int images, int reusedImages)
    {
        Interlocked.Add(ref chunksTotal, chunks);
        Interlocked.Add(ref chunksReused, reusedChunks);
        Interlocked.Add(ref positionsReused, reusedPositions);
        Interlocked.Add(ref positionsPrefilled, positions - reusedPositions);
        Interlocked.Add(ref imagesTotal, images);
        Interlocked.Add(ref imagesReused, reusedImages);
    }

    public long PositionsReused => Interlocked.Read(ref positionsReused);
    public long PositionsPrefilled => Interlocked.Read(ref positionsPrefilled);

    public string ToPrometheus()
    {
        var sb = new StringBuilder();
        void Counter(string name, string help, long value) =>
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append("\n# TYPE ").Append(name).Append(" counter\n").Append(name).Append(' ').Append(value).Append('\n');
        void Gauge(string name, string help, double value) =>
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append("\n# TYPE ").Append(name).Append(" gauge\n").Append(name).Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        Counter("vchat_requests_total", "Chat completion requests received.", Interlocked.Read(ref requests));
        Counter("vchat_request_errors_total", "Requests answered with an error status.", Interlocked.Read(ref requestErrors));
        Counter("vchat_requests_cancelled_total", "Sequences cancelled because their client disconnected.", Interlocked.Read(ref cancelled));
        Counter("vchat_prompt_tokens_total", "Prompt positions of finished requests (images counted as their tokens).", Interlocked.Read(ref promptTokens));
        Counter("vchat_completion_tokens_total", "Generated tokens.", Interlocked.Read(ref completionTokens));
        Counter("vchat_prefill_positions_total", "Prompt positions computed by prefill.", Interlocked.Read(ref positionsPrefilled));
        Counter("vchat_kv_reuse_positions_total", "Prompt positions taken from the conversation cache instead of computed.", Interlocked.Read(ref positionsReused));
        Counter("vchat_kv_reuse_chunks_total", "Prompt chunks (rounds) taken from the conversation cache.", Interlocked.Read(ref chunksReused));
        Counter("vchat_prompt_chunks_total", "Prompt chunks (rounds) of all requests.", Interlocked.Read(ref chunksTotal));
        Counter("vchat_image_reuse_total", "Images whose features were already in a reused cache (not encoded again).", Interlocked.Read(ref imagesReused));
        Counter("vchat_images_total", "Images in requests.", Interlocked.Read(ref imagesTotal));
        long total = Interlocked.Read(ref chunksTotal);
        Gauge("vchat_kv_reuse_hit_ratio", "Share of prompt chunks served from the conversation cache.", total == 0 ? 0 : (double)Interlocked.Read(ref chunksReused) / total);
        long images = Interlocked.Read(ref imagesTotal);
        Gauge("vchat_image_reuse_ratio", "Share of request images not encoded again because their conversation's cache was reused.", images == 0 ? 0 : (double)Interlocked.Read(ref imagesReused) / images);
        long hits = Interlocked.Read(ref ImageFeatureHits), misses = Interlocked.Read(ref ImageFeatureMisses);
        Counter("vchat_image_feature_cache_hits_total", "Images encoded earlier (same preprocessed pixels) whose features were taken from the image cache.", hits);
        Counter("vchat_image_feature_cache_misses_total", "Images run through the vision encoder.", misses);
        Gauge("vchat_image_feature_cache_hit_ratio", "Share of encoder calls served by the image feature cache.", hits + misses == 0 ? 0 : (double)hits / (hits + misses));
        Gauge("vchat_queue_depth", "Requests waiting for a batch slot.", Volatile.Read(ref QueueDepth));
        Gauge("vchat_running_sequences", "Sequences being prefilled or decoded.", Volatile.Read(ref Running));
        Gauge("vchat_kv_cache_entries", "Conversation states kept for reuse.", Volatile.Read(ref CacheEntries));
        Gauge("vchat_kv_cache_bytes", "Bytes of the kept conversation caches.", Interlocked.Read(ref CacheBytes));
        Counter("vchat_kv_cache_evictions_total", "Conversation states dropped (least recently used first) to stay within --kv-cache-mb.", Interlocked.Read(ref CacheEvictions));
        TimeToFirstToken.Write(sb, "vchat_time_to_first_token_seconds", "From request arrival to its first generated token.");
        InterTokenLatency.Write(sb, "vchat_inter_token_latency_seconds", "Between consecutive tokens of a sequence.");
        BatchSize.Write(sb, "vchat_batch_size", "Sequences in each decode step.");
        return sb.ToString();
    }
}
