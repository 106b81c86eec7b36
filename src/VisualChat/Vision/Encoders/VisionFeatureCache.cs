using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>
/// Remembers encoder outputs per image so an image shown again (a later chat round, a repeated sample) is not
/// re-encoded. Keys are SHA-256 of the encoder id plus either the preprocessed pixel tensor (shape, dtype, bytes) or
/// the raw image bytes plus a preprocessor id. Entries are detached fp32 CPU copies, evicted least-recently-used once
/// their total size exceeds <see cref="CapacityBytes"/>. Not thread-safe.
/// </summary>
public sealed class VisionFeatureCache : IDisposable
{
    private readonly Dictionary<string, LinkedListNode<Entry>> entries = new(StringComparer.Ordinal);
    private readonly LinkedList<Entry> recency = new();

    public VisionFeatureCache(long capacityBytes)
    {
        if (capacityBytes <= 0)
            throw new ArgumentOutOfRangeException(nameof(capacityBytes), "The feature cache needs a positive byte budget.");
        CapacityBytes = capacityBytes;
    }

    public long CapacityBytes { get; }
    public long SizeBytes { get; private set; }
    public int Count => entries.Count;
    public long Hits { get; private set; }
    public long Misses { get; private set; }
    public long Evictions { get; private set; }

    /// <summary>Key of one preprocessed image [3, H, W] (or [1, 3, H, W]) for <paramref name="encoderId"/>.</summary>
    public static string KeyForPixels(string encoderId, Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var contiguous = pixels.detach().cpu().contiguous();
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes($"{encoderId}\n{contiguous.dtype}\n{string.Join(",", contiguous.shape)}\n"));
        hash.AppendData(contiguous.bytes);
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    /// <summary>Key of an encoded image file's bytes as preprocessed by <paramref name="processorId"/>, for <paramref name="encoderId"/>.</summary>
    public static string KeyForImageBytes(string encoderId, string processorId, ReadOnlySpan<byte> imageBytes)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes($"{encoderId}\n{processorId}\n"));
        hash.AppendData(imageBytes);
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    /// <summary>A fresh copy of the cached features [T, D], or null (counted as a miss).</summary>
    public Tensor? TryGet(string key)
    {
        if (!entries.TryGetValue(key, out var node))
        {
            Misses++;
            return null;
        }
        Hits++;
        recency.Remove(node);
        recency.AddFirst(node);
        return node.Value.Features.clone();
    }

    /// <summary>Stores a copy of one image's features [T, D]; features larger than the whole budget are not kept.</summary>
    public void Put(string key, Tensor features)
    {
        var copy = features.detach().to(ScalarType.Float32).cpu().clone().DetachFromDisposeScope();
        var bytes = copy.NumberOfElements * sizeof(float);
        if (entries.TryGetValue(key, out var existing)) Remove(existing);
        if (bytes > CapacityBytes)
        {
            copy.Dispose();
            return;
        }
        var node = recency.AddFirst(new Entry(key, copy, bytes));
        entries[key] = node;
        SizeBytes += bytes;
        while (SizeBytes > CapacityBytes && recency.Last is { } oldest)
        {
            Remove(oldest);
            Evictions++;
        }
    }

    /// <summary>
    /// Encodes [N, 3, H, W] pixels, reusing cached rows: only images not yet seen go through the encoder, in one batch.
    /// Returns [N, T, D] fp32 on the pixels' device, without autograd history. Keys default to
    /// <see cref="KeyForPixels"/>; pass <paramref name="keys"/> (one per image, e.g. from <see cref="KeyForImageBytes"/>)
    /// to skip hashing the pixel tensor. An unfrozen encoder bypasses the cache: its outputs change as it trains and
    /// must keep their graph.
    /// </summary>
    public Tensor GetOrEncode(IVisionEncoder encoder, Tensor pixels, IReadOnlyList<string>? keys = null)
    {
        if (pixels.dim() != 4)
            throw new ArgumentException($"Pixels for the feature cache must be [N, 3, H, W]; got [{string.Join(", ", pixels.shape)}].", nameof(pixels));
        var count = (int)pixels.shape[0];
        if (keys is not null && keys.Count != count)
            throw new ArgumentException($"The feature cache got {keys.Count} keys for {count} images; pass one key per image.", nameof(keys));
        if (!encoder.IsFrozen) return encoder.Encode(pixels);

        using var scope = NewDisposeScope();
        var rows = new Tensor?[count];
        var imageKeys = new string[count];
        var missing = new List<int>();
        for (var i = 0; i < count; i++)
        {
            imageKeys[i] = keys?[i] ?? KeyForPixels(encoder.EncoderId, pixels[i]);
            rows[i] = TryGet(imageKeys[i]);
            if (rows[i] is null) missing.Add(i);
        }

        if (missing.Count > 0)
        {
            // An image repeated inside one batch is encoded once.
            var unique = missing.GroupBy(i => imageKeys[i]).Select(g => g.First()).ToList();
            var index = tensor(unique.Select(i => (long)i).ToArray(), device: pixels.device);
            var encoded = encoder.Encode(pixels.index_select(0, index));
            for (var j = 0; j < unique.Count; j++)
                Put(imageKeys[unique[j]], encoded[j]);
            var rowByKey = unique.Select((i, j) => (Key: imageKeys[i], Row: j)).ToDictionary(p => p.Key, p => p.Row);
            foreach (var i in missing)
                rows[i] = encoded[rowByKey[imageKeys[i]]].detach().to(ScalarType.Float32).cpu();
        }
        return stack(rows.Select(r => r!).ToArray()).to(pixels.device).MoveToOuterDisposeScope();
    }

    public void Clear()
    {
        foreach (var node in recency) node.Features.Dispose();
        recency.Clear();
        entries.Clear();
        SizeBytes = 0;
    }

    public void Dispose() => Clear();

    private void Remove(LinkedListNode<Entry> node)
    {
        recency.Remove(node);
        entries.Remove(node.Value.Key);
        SizeBytes -= node.Value.Bytes;
        node.Value.Features.Dispose();
    }

    private sealed record Entry(string Key, Tensor Features, long Bytes);
}
