using VisualChat.Attention;
using VisualChat.Inference;
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
            for (int s = 0; s < steps; s++) {
                using var scope = NewDisposeScope();
                var logits = model.forward(new CausalLMInput(InputIds: tensor(ids.ToArray()).unsqueeze(0))).Logits;
                int next = (int)logits[0, -1].argmax().item<long>();
                expected.Add(next);
                ids.Add(next);
            }
        Assert.True(expected.Distinct().Count() > 2, "the reference should not be degenerate for this test to mean anything");

        var actual = TaggedRun(model, prompt, steps);
        Assert.Equal(expected, actual);
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
