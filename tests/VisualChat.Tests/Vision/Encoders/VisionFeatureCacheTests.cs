using TorchSharp;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Encoders;

public class VisionFeatureCacheTests
{
    /// <summary>Wraps a real tiny encoder and counts what reaches it.</summary>
    private sealed class CountingEncoder(IVisionEncoder inner) : IVisionEncoder
    {
        public int Calls { get; private set; }
        public int ImagesEncoded { get; private set; }

        public Tensor Encode(Tensor pixels)
        {
            Calls++;
            ImagesEncoded += (int)pixels.shape[0];
            return inner.Encode(pixels);
        }

        public int OutputTokens => inner.OutputTokens;
        public int OutputWidth => inner.OutputWidth;
        public int ImageSize => inner.ImageSize;
        public string EncoderId => inner.EncoderId;
        public string Kind => inner.Kind;
        public object Config => inner.Config;
        public void SaveConfig(string path) => inner.SaveConfig(path);
        public ImageProcessorConfig DefaultImageProcessor => inner.DefaultImageProcessor;
        public bool IsFrozen => inner.IsFrozen;
        public void Freeze() => inner.Freeze();
        public void Unfreeze() => inner.Unfreeze();
    }

    private const long EntryBytes = 17 * 32 * sizeof(float);

    private static Tensor Image(double phase) => VisionTestSupport.FormulaPixels(new long[] { 1, 3, 32, 32 }, phase);

    [Fact]
    public void ImageShownAgainIsNotReencoded()
    {
        using var scope = NewDisposeScope();
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        var encoder = new CountingEncoder(model);
        using var cache = new VisionFeatureCache(1 << 20);
        var pixels = cat(new[] { Image(0), Image(1) }, 0);

        var first = cache.GetOrEncode(encoder, pixels);
        Assert.Equal((1, 2, 0L, 2L), (encoder.Calls, encoder.ImagesEncoded, cache.Hits, cache.Misses));

        var second = cache.GetOrEncode(encoder, pixels.clone());
        Assert.Equal((1, 2, 2L, 2L), (encoder.Calls, encoder.ImagesEncoded, cache.Hits, cache.Misses));
        Assert.True(second.allclose(first, rtol: 0, atol: 0));
        Assert.Equal(new long[] { 2, 17, 32 }, second.shape);
        Assert.False(second.requires_grad);
        Assert.True(first.allclose(model.Encode(pixels), rtol: 0, atol: 1e-6));

        // One new image next to a known one: only the new one reaches the encoder.
        var mixed = cache.GetOrEncode(encoder, cat(new[] { Image(2), Image(1) }, 0));
        Assert.Equal((2, 3), (encoder.Calls, encoder.ImagesEncoded));
        Assert.True(mixed[1].allclose(first[1], rtol: 0, atol: 0));
        Assert.Equal(3, cache.Count);
    }

    [Fact]
    public void RepeatedImageInOneBatchIsEncodedOnce()
    {
        using var scope = NewDisposeScope();
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        var encoder = new CountingEncoder(model);
        using var cache = new VisionFeatureCache(1 << 20);
        var features = cache.GetOrEncode(encoder, cat(new[] { Image(0), Image(0), Image(3) }, 0));
        Assert.Equal(2, encoder.ImagesEncoded);
        Assert.True(features[0].allclose(features[1], rtol: 0, atol: 0));
        Assert.False(features[0].allclose(features[2], rtol: 0, atol: 1e-3));
    }

    [Fact]
    public void EvictsLeastRecentlyUsedByBytes()
    {
        using var scope = NewDisposeScope();
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        var encoder = new CountingEncoder(model);
        using var cache = new VisionFeatureCache(2 * EntryBytes);

        cache.GetOrEncode(encoder, Image(0));
        cache.GetOrEncode(encoder, Image(1));
        cache.GetOrEncode(encoder, Image(0)); // touch image 0 so image 1 is the oldest
        cache.GetOrEncode(encoder, Image(2)); // over budget: evicts image 1
        Assert.Equal((2, 2 * EntryBytes, 1L), (cache.Count, cache.SizeBytes, cache.Evictions));
        Assert.Equal(3, encoder.Calls);

        cache.GetOrEncode(encoder, Image(0));
        Assert.Equal(3, encoder.Calls);
        cache.GetOrEncode(encoder, Image(1));
        Assert.Equal(4, encoder.Calls);
    }

    [Fact]
    public void CallerKeysReplacePixelHashing()
    {
        using var scope = NewDisposeScope();
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        var encoder = new CountingEncoder(model);
        using var cache = new VisionFeatureCache(1 << 20);
        var key = VisionFeatureCache.KeyForImageBytes(encoder.EncoderId, "clip-32", new byte[] { 9, 9, 9 });
        var first = cache.GetOrEncode(encoder, Image(0), new[] { key });
        // Same file key, so the cached features are reused even though these pixels differ.
        var second = cache.GetOrEncode(encoder, Image(5), new[] { key });
        Assert.Equal(1, encoder.Calls);
        Assert.True(second.allclose(first, rtol: 0, atol: 0));
        Assert.Throws<ArgumentException>(() => cache.GetOrEncode(encoder, Image(0), new[] { key, key }));
    }

    [Fact]
    public void UnfrozenEncoderBypassesTheCache()
    {
        using var scope = NewDisposeScope();
        using var model = new ClipVisionModel(ClipVisionConfig.Tiny());
        model.Unfreeze();
        var encoder = new CountingEncoder(model);
        using var cache = new VisionFeatureCache(1 << 20);
        cache.GetOrEncode(encoder, Image(0));
        var again = cache.GetOrEncode(encoder, Image(0));
        Assert.Equal(2, encoder.Calls);
        Assert.Equal(0, cache.Count);
        Assert.True(again.requires_grad);
    }

    [Fact]
    public void EntryLargerThanBudgetIsNotKept()
    {
        using var scope = NewDisposeScope();
        using var cache = new VisionFeatureCache(EntryBytes - 1);
        cache.Put("k", zeros(17, 32));
        Assert.Equal((0, 0L), (cache.Count, cache.SizeBytes));
        Assert.Null(cache.TryGet("k"));
        Assert.Equal(1L, cache.Misses);
    }

    [Fact]
    public void KeysSeparateEncodersProcessorsAndContent()
    {
        using var scope = NewDisposeScope();
        var image = Image(0)[0];
        Assert.Equal(VisionFeatureCache.KeyForPixels("a", image), VisionFeatureCache.KeyForPixels("a", image.clone()));
        Assert.NotEqual(VisionFeatureCache.KeyForPixels("a", image), VisionFeatureCache.KeyForPixels("b", image));
        Assert.NotEqual(VisionFeatureCache.KeyForPixels("a", image), VisionFeatureCache.KeyForPixels("a", Image(0.001)[0]));
        Assert.Equal(64, VisionFeatureCache.KeyForPixels("a", image).Length);

        var bytes = new byte[] { 1, 2, 3 };
        Assert.NotEqual(VisionFeatureCache.KeyForImageBytes("enc", "clip-224", bytes), VisionFeatureCache.KeyForImageBytes("enc", "clip-336", bytes));
        Assert.Equal(VisionFeatureCache.KeyForImageBytes("enc", "clip-224", bytes), VisionFeatureCache.KeyForImageBytes("enc", "clip-224", new byte[] { 1, 2, 3 }));

        using var cache = new VisionFeatureCache(1 << 16);
        cache.Put("x", ones(2, 2));
        using var hit = cache.TryGet("x");
        Assert.NotNull(hit);
        Assert.Equal(1L, cache.Hits);
    }
}
