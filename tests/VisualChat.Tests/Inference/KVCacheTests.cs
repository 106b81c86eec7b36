using TorchSharp;
using VisualChat.Attention;
using VisualChat.Model;
using VisualChat.Tests.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Inference;

public class KVCacheTests
{
    static readonly long[] Ids = { 1, 5, 77, 3, 100, 42, 9, 64, 120, 7 };

    static Tensor Row(params long[] ids) => tensor(ids).unsqueeze(0);

    [Fact]
    public void TokenByTokenDecodingMatchesFullForward()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny());
        var full = model.forward(new CausalLMInput(InputIds: Row(Ids))).Logits;
        using var cache = model.CreateCache(capacity: 4);   // forces growth on the way
        var prefill = model.forward(new CausalLMInput(InputIds: Row(Ids[..3]), Cache: cache)).Logits;
        Assert.True(LlamaTestModels.MaxAbsDiff(prefill, full.narrow(1, 0, 3)) < 1e-5f);
        for (int i = 3; i < Ids.Length; i++) {
            var step = model.forward(new CausalLMInput(InputIds: Row(Ids[i]), Cache: cache)).Logits;
            Assert.True(LlamaTestModels.MaxAbsDiff(step, full.narrow(1, i, 1)) < 1e-5f, $"position {i}");
        }
        Assert.Equal(Ids.Length, cache.Length);
        Assert.True(cache.Capacity >= Ids.Length);
    }

    [Fact]
    public void PrefillInTwoChunksMatchesFullForward()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny(tied: true));
        var full = model.forward(new CausalLMInput(InputIds: Row(Ids))).Logits;
        using var cache = model.CreateCache();
        var first = model.forward(new CausalLMInput(InputIds: Row(Ids[..6]), Cache: cache)).Logits;
        var second = model.forward(new CausalLMInput(InputIds: Row(Ids[6..]), Cache: cache)).Logits;
        Assert.True(LlamaTestModels.MaxAbsDiff(cat(new[] { first, second }, 1), full) < 1e-5f);

        // Crop back and redo the second chunk: same logits.
        cache.Crop(6);
        var redo = model.forward(new CausalLMInput(InputIds: Row(Ids[6..]), Cache: cache)).Logits;
        Assert.True(LlamaTestModels.MaxAbsDiff(redo, second) < 1e-6f);
    }

    [Fact]
    public void LeftPaddedBatchMatchesEachRowAlone()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny());
        long[] shortRow = { 1, 9, 30, 4 };
        long[] longRow = { 1, 5, 77, 3, 100, 42 };
        var ids = tensor(new long[] { 0, 0, 1, 9, 30, 4, 1, 5, 77, 3, 100, 42 }).view(2, 6);
        var mask = tensor(new long[] { 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }).view(2, 6);
        var aloneShort = model.forward(new CausalLMInput(InputIds: Row(shortRow))).Logits;
        var aloneLong = model.forward(new CausalLMInput(InputIds: Row(longRow))).Logits;

        var batched = model.forward(new CausalLMInput(InputIds: ids, AttentionMask: mask)).Logits;
        Assert.True(LlamaTestModels.MaxAbsDiff(batched[0].narrow(0, 2, 4), aloneShort[0]) < 1e-5f);
        Assert.True(LlamaTestModels.MaxAbsDiff(batched[1], aloneLong[0]) < 1e-5f);
        Assert.False(batched.isnan().any().item<bool>());

        // Same through the cache, then one more token each: positions continue from each row's real length.
        using var cache = model.CreateCache();
        model.forward(new CausalLMInput(InputIds: ids, AttentionMask: mask, Cache: cache));
        var next = model.forward(new CausalLMInput(InputIds: tensor(new long[] { 11, 12 }).view(2, 1), Cache: cache)).Logits;
        var shortNext = model.forward(new CausalLMInput(InputIds: Row(shortRow.Append(11).ToArray()))).Logits.narrow(1, 4, 1);
        var longNext = model.forward(new CausalLMInput(InputIds: Row(longRow.Append(12).ToArray()))).Logits.narrow(1, 6, 1);
        Assert.True(LlamaTestModels.MaxAbsDiff(next[0], shortNext[0]) < 1e-5f);
        Assert.True(LlamaTestModels.MaxAbsDiff(next[1], longNext[0]) < 1e-5f);
    }

    [Fact]
    public void CacheWritesInPlaceAndTracksPaddingAndModality()
    {
        using var scope = NewDisposeScope();
        using var cache = new KVCache(numLayers: 1, initialCapacity: 8);
        cache.BeginStep(2, 3, tensor(new[] { false, true, true, true, true, true }).view(2, 3), tensor(new long[] { 0, 1, 1, 0, 0, 1 }).view(2, 3), CPU);
        var k = ones(2, 2, 3, 4);
        var (keys, values) = cache.Update(0, k, k * 2);
        cache.EndStep();
        Assert.Equal(new long[] { 2, 2, 3, 4 }, keys.shape);
        Assert.Equal(3, cache.Length);
        Assert.Equal(8, cache.Capacity);

        cache.BeginStep(2, 1, null, null, CPU);
        var (keys2, _) = cache.Update(0, full(2, 2, 1, 4, 5f), zeros(2, 2, 1, 4));
        cache.EndStep();
        Assert.Equal(new long[] { 2, 2, 4, 4 }, keys2.shape);
        Assert.Equal(1f, keys2[0, 0, 0, 0].item<float>());   // earlier entries untouched
        Assert.Equal(5f, keys2[1, 1, 3, 2].item<float>());
        cache.BeginStep(2, 0, null, null, CPU);
        Assert.Equal(new[] { false, true, true, true, true, true, true, true }, cache.KeyPaddingView()!.flatten().data<bool>().ToArray());
        // An untagged step is text (TokenModality.Text = 1) where real: real tokens are never tagged as padding.
        Assert.Equal(new long[] { 0, 1, 1, 1, 0, 0, 1, 1 }, cache.ModalityView()!.flatten().data<long>().ToArray());
        cache.EndStep();

        // An untagged step with masked positions: those, and only those, are padding.
        cache.BeginStep(2, 1, tensor(new[] { true, false }).view(2, 1), null, CPU);
        Assert.Equal(new long[] { 1, 0 }, cache.ModalityView()!.narrow(1, 4, 1).flatten().data<long>().ToArray());
        cache.Crop(4);

        Assert.Throws<ArgumentException>(() => cache.BeginStep(3, 1, null, null, CPU));
        cache.Reset();
        Assert.Equal(0, cache.Length);
        cache.BeginStep(3, 1, null, null, CPU);   // any batch size after a reset
        Assert.Null(cache.KeyPaddingView());
    }

    [Fact]
    public void CausalMaskKeepsPaddedQueriesFinite()
    {
        using var scope = NewDisposeScope();
        var padding = tensor(new[] { false, false, true, true }).view(1, 4);
        var mask = AttentionMasks.Causal(4, 0, padding, CPU);
        var expected = new[] {
            true, false, false, false,   // a pad query sees only itself
            false, true, false, false,
            false, false, true, false,
            false, false, true, true,
        };
        Assert.Equal(expected, mask.flatten().data<bool>().ToArray());
    }
}
