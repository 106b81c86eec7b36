using VisualChat.Attention;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Tests.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Generation;

public class TaggedPrefillTests
{
    /// <summary>Issue 13 item 7: a text-tagged prefill leaves modality in the cache; generated tokens must then be
    /// tagged Text, not Padding (MMCA excludes padding keys, which changed greedy output).</summary>
    [Fact]
    public void TaggedPrefillDecodesLikeFullForwardsWithoutCache()
    {
        var config = LlamaTestModels.Tiny();
        config.MaxPositionEmbeddings = 64;
        using var model = LlamaTestModels.ClosedFormModel(config);
        model.AttentionKernel = new MmcaAttentionKernel();
        int[] prompt = [1, 5, 77, 3];
        const int steps = 10;
        var expected = new List<int>();
        var ids = prompt.Select(i => (long)i).ToList();
        using (var noGrad = no_grad())
        {
            for (int s = 0; s < steps; s++) {
                using var scope = NewDisposeScope();
                var logits = model.forward(new CausalLMInput(InputIds: tensor(ids.ToArray()).unsqueeze(0))).Logits;
                int next = (int)logits[0, -1].argmax().item<long>();
                expected.Add(next);
                ids.Add(next);
            }
        }

        Assert.True(expected.Distinct().Count() > 2, "the reference should not be degenerate for this test to mean anything");

        var actual = TaggedRun(model, prompt, steps);
        Assert.Equal(expected, actual);
        var untagged = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = steps, StopTokenIds = [] }).TokenIds;
        Assert.Equal(untagged, actual);
    }

    [Fact]
    public void CacheNeverTagsRealTokensAsPadding()
    {
        using var scope = NewDisposeScope();
        // Untagged first, tagged later: the earlier real positions become text, masked ones padding.
        using var cache = new KVCache(numLayers: 1, initialCapacity: 4);
        cache.BeginStep(2, 2, tensor(new[] { false, true, true, true }).view(2, 2), null, CPU);
        cache.EndStep();
        Assert.False(cache.HasModality);
        cache.BeginStep(2, 1, null, tensor(new long[] { (long)TokenModality.Image, (long)TokenModality.Text }).view(2, 1), CPU);
        cache.EndStep();
        cache.BeginStep(2, 1, null, null, CPU);
        long P = (long)TokenModality.Padding, T = (long)TokenModality.Text, I = (long)TokenModality.Image;
        Assert.Equal(new[] { P, T, I, T, T, T, T, T }, cache.ModalityView()!.flatten().data<long>().ToArray());
    }

    static IReadOnlyList<int> TaggedRun(LlamaForCausalLM model, int[] prompt, int steps)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var input = tensor(prompt.Select(i => (long)i).ToArray()).unsqueeze(0);
        var modality = full(1, prompt.Length, (long)TokenModality.Text, dtype: ScalarType.Int64);
        return TextGenerator.Decode(model, new CausalLMInput(InputIds: input, TokenModality: modality), [prompt],
            new GenerationOptions { MaxNewTokens = steps, StopTokenIds = [] })[0].TokenIds;
    }
}
