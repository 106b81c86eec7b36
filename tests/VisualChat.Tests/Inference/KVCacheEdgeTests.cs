using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Tests.Inference;

/// <summary>The cache's bookkeeping on its own: argument checks, growth, cropping a padded cache, freeing storage and
/// the guards of the fused decode step (which writes into the storage directly, so a wrong "yes" corrupts a sequence).
/// Written from the mutants a Stryker run of KVCache.cs left alive (docs/mutation-testing.md).</summary>
public class KVCacheEdgeTests
{
    const long KvHeads = 2, HeadDim = 4;

    /// <summary>One whole forward's worth of cache writes: every layer gets keys filled with <paramref name="value"/>.</summary>
    static void Step(KVCache cache, long batch, long tokens, bool[]? padding = null, long[]? modality = null, float value = 1f, int layers = -1)
    {
        using var scope = NewDisposeScope();
        cache.BeginStep(batch, tokens,
            padding is null ? null : tensor(padding).view(batch, tokens),
            modality is null ? null : tensor(modality).view(batch, tokens), CPU);
        for (int layer = 0; layer < (layers < 0 ? cache.NumLayers : layers); layer++)
            cache.Update(layer, full(batch, KvHeads, tokens, HeadDim, value), full(batch, KvHeads, tokens, HeadDim, -value));
        cache.EndStep();
    }

    static bool[] Padding(KVCache cache)
    {
        using var view = cache.KeyPaddingView();
        return view is null ? Array.Empty<bool>() : view.flatten().data<bool>().ToArray();
    }

    [Fact]
    public void TheConstructorRefusesNoLayersAndNoCapacity_AndStartsEmpty()
    {
        Assert.Equal("numLayers", Assert.Throws<ArgumentOutOfRangeException>(() => new KVCache(0)).ParamName);
        Assert.Equal("initialCapacity", Assert.Throws<ArgumentOutOfRangeException>(() => new KVCache(1, 0)).ParamName);
        using var cache = new KVCache(numLayers: 3, initialCapacity: 1);
        Assert.Equal(3, cache.NumLayers);
        Assert.Equal(1, cache.Capacity);
        Assert.Equal(0, cache.Length);
        Assert.Equal(-1, cache.BatchSize);
        Assert.False(cache.HasModality);
        Assert.Null(cache.KeyPaddingView());
        Assert.Null(cache.ModalityView());
    }

    [Fact]
    public void StorageGrowsOnlyPastCapacity_ToTheLargerOfTwiceAndWhatIsNeeded_KeepingEveryPosition()
    {
        using var scope = NewDisposeScope();
        using var cache = new KVCache(numLayers: 2, initialCapacity: 4);
        Step(cache, 1, 4, new[] { false, true, true, true }, new long[] { 0, 2, 2, 1 }, value: 3f);
        Assert.Equal(4, cache.Capacity);   // exactly full: no growth

        var before = new[] { cache.LayerKeys(0)!, cache.LayerValues(1)!, cache.ModalityStorage! };
        Step(cache, 1, 1, value: 5f);
        Assert.Equal(8, cache.Capacity);   // doubled
        Assert.All(before, t => Assert.True(t.IsInvalid, "growing frees the old storage"));
        Step(cache, 1, 12, value: 7f);
        Assert.Equal(17, cache.Capacity);  // 5 + 12 > 2 × 8
        Assert.Equal(17, cache.Length);

        for (int layer = 0; layer < 2; layer++) {
            var keys = cache.LayerKeys(layer)!;
            var values = cache.LayerValues(layer)!;
            Assert.Equal(new long[] { 1, KvHeads, 17, HeadDim }, keys.shape);
            Assert.Equal(new[] { 3f, 3f, 3f, 3f, 5f, 7f }, keys[0, 1].select(1, 0).data<float>().ToArray()[..6]);
            Assert.Equal(-3f, values[0, 0, 3, 3].item<float>());
            Assert.Equal(-7f, values[0, 0, 16, 0].item<float>());
        }
        cache.BeginStep(1, 0, null, null, CPU);
        // The padded first position and the tags of the first step survive both growths; later steps are untagged text.
        Assert.Equal(new[] { false }.Concat(Enumerable.Repeat(true, 16)), Padding(cache));
        Assert.Equal(new long[] { 0, 2, 2, 1 }.Concat(Enumerable.Repeat(1L, 13)), cache.ModalityView()!.flatten().data<long>().ToArray());
        cache.EndStep();
    }

    [Fact]
    public void CroppingAPaddedCacheRecomputesWhetherAnyPaddingIsLeft()
    {
        using var cache = new KVCache(numLayers: 1, initialCapacity: 8);
        Step(cache, 1, 4, new[] { true, true, false, true });
        Assert.Equal(new[] { true, true, false, true }, Padding(cache));

        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Crop(5));
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Crop(-1));
        cache.Crop(4);                       // its own length: allowed, nothing changes
        Assert.Equal(4, cache.Length);
        Assert.NotNull(cache.KeyPaddingView());

        // A second padded step does not cancel the first (padding is sticky until a crop removes it).
        Step(cache, 1, 1, new[] { false });
        Assert.Equal(new[] { true, true, false, true, false }, Padding(cache));
        cache.Crop(4);
        cache.Crop(3);                       // the padded position is still inside
        Assert.Equal(new[] { true, true, false }, Padding(cache));
        cache.Crop(2);                       // now it is gone: no mask is needed
        Assert.Null(cache.KeyPaddingView());
        Assert.Equal(2, cache.Length);

        // A cache cropped to nothing has no padding either, even if its first position was padded.
        using var leftPadded = new KVCache(numLayers: 1, initialCapacity: 8);
        Step(leftPadded, 1, 3, new[] { false, true, true });
        leftPadded.Crop(0);
        Assert.Equal(0, leftPadded.Length);
        Assert.Null(leftPadded.KeyPaddingView());
    }

    [Fact]
    public void CropDropsAnAnnouncedStepThatWasNotCommitted()
    {
        using var scope = NewDisposeScope();
        using var cache = new KVCache(numLayers: 1, initialCapacity: 8);
        Step(cache, 1, 3);
        cache.BeginStep(1, 2, null, tensor(new long[] { 2, 2 }).view(1, 2), CPU);
        cache.Crop(3);
        Assert.Equal(3, cache.ModalityView()!.shape[1]);
        Assert.Throws<InvalidOperationException>(() => cache.Update(0, zeros(1, KvHeads, 2, HeadDim), zeros(1, KvHeads, 2, HeadDim)));
        cache.EndStep();
        Assert.Equal(3, cache.Length);
    }

    [Fact]
    public void ResetAndDisposeFreeEveryLayerAndTheMasks()
    {
        using var scope = NewDisposeScope();
        var cache = new KVCache(numLayers: 3, initialCapacity: 4);
        Step(cache, 2, 3, new[] { false, true, true, true, true, true }, new long[] { 2, 2, 1, 2, 2, 1 });
        var held = Enumerable.Range(0, 3).SelectMany(l => new[] { cache.LayerKeys(l)!, cache.LayerValues(l)! }).Append(cache.ModalityStorage!).ToArray();
        Assert.All(held, t => Assert.False(t.IsInvalid));

        cache.Reset();
        Assert.All(held, t => Assert.True(t.IsInvalid, "Reset frees the storage"));
        for (int layer = 0; layer < 3; layer++) {
            Assert.Null(cache.LayerKeys(layer));
            Assert.Null(cache.LayerValues(layer));
        }
        Assert.Null(cache.ModalityStorage);
        Assert.False(cache.HasModality);
        Assert.Equal(-1, cache.BatchSize);
        Assert.Equal(0, cache.Length);

        // A fresh, unpadded step after the reset: no stale padding flag, no stale tags.
        Step(cache, 1, 2);
        Assert.Null(cache.KeyPaddingView());
        Assert.Null(cache.ModalityView());
        var again = new[] { cache.LayerKeys(0)!, cache.LayerValues(2)! };
        cache.Dispose();
        Assert.All(again, t => Assert.True(t.IsInvalid, "Dispose frees the storage"));
    }

    [Fact]
    public void FusedDecodeIsRefusedForAnEmptyBatchedPaddedPendingOrPartlyWrittenCache()
    {
        using var scope = NewDisposeScope();
        using (var empty = new KVCache(numLayers: 2)) {
            Assert.False(empty.SupportsFusedDecode);
            Assert.Throws<InvalidOperationException>(() => empty.ReserveTextPosition());
        }
        using (var batched = new KVCache(numLayers: 2)) {
            Step(batched, 2, 3);
            Assert.False(batched.SupportsFusedDecode);
            Assert.Throws<InvalidOperationException>(() => batched.ReserveTextPosition());
        }
        using (var padded = new KVCache(numLayers: 2)) {
            Step(padded, 1, 3, new[] { false, true, true });
            Assert.False(padded.SupportsFusedDecode);
            Assert.Throws<InvalidOperationException>(() => padded.ReserveTextPosition());
        }
        using (var pending = new KVCache(numLayers: 2)) {
            Step(pending, 1, 3);
            Assert.True(pending.SupportsFusedDecode);
            pending.BeginStep(1, 1, null, null, CPU);
            Assert.False(pending.SupportsFusedDecode);
        }
        using (var partly = new KVCache(numLayers: 2)) {
            Step(partly, 1, 3, layers: 1);     // the last layer was never written
            Assert.False(partly.SupportsFusedDecode);
        }
    }

    [Fact]
    public void AReservedPositionIsARealTextTokenEvenWhereAnEarlierCroppedStepWasPaddingOrImage()
    {
        using var scope = NewDisposeScope();
        using var cache = new KVCache(numLayers: 2, initialCapacity: 3);
        Step(cache, 1, 3, new[] { true, true, false }, new long[] { 1, 2, 0 });
        cache.Crop(2);                        // slot 2 still holds "padding" in both masks
        Assert.True(cache.SupportsFusedDecode);

        Assert.Equal(2, cache.ReserveTextPosition());
        Assert.Equal(3, cache.Capacity);
        cache.EndStep();
        Assert.Equal(3, cache.Length);
        Assert.Equal(3, cache.ReserveTextPosition());
        Assert.Equal(6, cache.Capacity);      // grown for it: the new slots start as zeros (padding) in both masks
        cache.Crop(3);                        // undo a reservation: nothing committed
        Assert.Equal(3, cache.Length);
        Assert.Equal(3, cache.ReserveTextPosition());
        cache.EndStep();

        // A later padded step makes the mask visible: both reserved positions are real text.
        cache.BeginStep(1, 1, tensor(new[] { false }).view(1, 1), null, CPU);
        Assert.Equal(new[] { true, true, true, true, false }, Padding(cache));
        Assert.Equal(new long[] { 1, 2, 1, 1, 0 }, cache.ModalityView()!.flatten().data<long>().ToArray());
    }

    [Fact]
    public void DecodeStorageIsAllocatedOnlyForAnEmptyCache_AndOnlyForOneSequence()
    {
        using var scope = NewDisposeScope();
        using (var empty = new KVCache(numLayers: 2, initialCapacity: 5)) {
            empty.EnsureDecodeStorage(KvHeads, HeadDim, ScalarType.Float32, CPU);
            Assert.Equal(1, empty.BatchSize);
            for (int layer = 0; layer < 2; layer++) {
                Assert.Equal(new long[] { 1, KvHeads, 5, HeadDim }, empty.LayerKeys(layer)!.shape);
                Assert.Equal(new long[] { 1, KvHeads, 5, HeadDim }, empty.LayerValues(layer)!.shape);
            }
            Assert.True(empty.SupportsFusedDecode);
            Assert.Equal(0, empty.ReserveTextPosition());
        }
        using (var announcedTwo = new KVCache(numLayers: 2)) {
            announcedTwo.BeginStep(2, 0, null, null, CPU);
            announcedTwo.EndStep();
            Assert.Throws<InvalidOperationException>(() => announcedTwo.EnsureDecodeStorage(KvHeads, HeadDim, ScalarType.Float32, CPU));
        }
        using (var croppedBatch = new KVCache(numLayers: 2)) {
            // Storage already exists (a batch of two, cropped to nothing): kept as it is, no refusal.
            Step(croppedBatch, 2, 3, value: 9f);
            croppedBatch.Crop(0);
            var keys = croppedBatch.LayerKeys(1)!;
            croppedBatch.EnsureDecodeStorage(KvHeads, HeadDim, ScalarType.Float32, CPU);
            Assert.Same(keys, croppedBatch.LayerKeys(1));
            Assert.Equal(2, croppedBatch.BatchSize);
        }
        using (var filled = new KVCache(numLayers: 2)) {
            Step(filled, 1, 3, value: 9f);
            var keys = filled.LayerKeys(0)!;
            filled.EnsureDecodeStorage(KvHeads, HeadDim, ScalarType.Float32, CPU);
            Assert.Same(keys, filled.LayerKeys(0));
            Assert.Equal(9f, keys[0, 1, 2, 3].item<float>());
        }
    }

    [Fact]
    public void UpdateRefusesAPositionCountOtherThanAnnounced()
    {
        using var scope = NewDisposeScope();
        using var cache = new KVCache(numLayers: 1);
        cache.BeginStep(1, 2, null, null, CPU);
        var error = Assert.Throws<InvalidOperationException>(() => cache.Update(0, zeros(1, KvHeads, 3, HeadDim), zeros(1, KvHeads, 3, HeadDim)));
        Assert.Contains("announced 2", error.Message);
    }
}
