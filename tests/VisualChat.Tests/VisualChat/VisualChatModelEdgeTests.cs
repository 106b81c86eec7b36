using TorchSharp.Modules;
using VisualChat.Attention;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Multimodal;

/// <summary>What a mutation run of VisualChatModel.cs and VisualChatModel.Generation.cs left alive
/// (docs/mutation-testing.md): switching attention modes, which parameters train, the tied head's width, the
/// argument checks of Interleave/Append/Prefill/Step, what padding and unused memory slots hold, the positions a round
/// takes, and the unfused (causal+cross) decode step against a full forward.</summary>
public class VisualChatModelEdgeTests
{
    static VisualChatModel Tiny(AttentionMode mode = AttentionMode.Mmca, long seed = 5) => VisualChatPresets.Create(VisualChatPresets.Tiny, seed, mode);

    static Tensor Images(int count) => stack(Enumerable.Range(0, count).Select(k => full(new long[] { 3, 32, 32 }, 0.15f * (k + 1) - 0.4f)).ToArray());

    static Tensor Ids(params int[][] rows) => tensor(rows.SelectMany(r => r.Select(i => (long)i)).ToArray(), new long[] { rows.Length, rows[0].Length });

    [Fact]
    public void AttentionModeSwitchesBetweenCausalAndMmcaOnly()
    {
        using var model = Tiny(AttentionMode.Causal);
        var causal = model.AttentionKernel;
        model.SetAttentionMode(AttentionMode.Causal);
        Assert.Same(causal, model.AttentionKernel);

        model.SetAttentionMode(AttentionMode.Mmca);
        Assert.IsType<MmcaAttentionKernel>(model.AttentionKernel);
        Assert.Equal(AttentionMode.Mmca, model.Config.AttentionMode);
        model.SetAttentionMode(AttentionMode.Causal);
        Assert.IsType<CausalAttentionKernel>(model.AttentionKernel);

        Assert.Throws<InvalidOperationException>(() => model.SetAttentionMode(AttentionMode.CausalCross));
        using var cross = Tiny(AttentionMode.CausalCross);
        var kernel = cross.AttentionKernel;
        cross.SetAttentionMode(AttentionMode.CausalCross);   // its own mode: nothing to do
        Assert.Same(kernel, cross.AttentionKernel);
        Assert.Contains("causal+cross", Assert.Throws<InvalidOperationException>(() => cross.SetAttentionMode(AttentionMode.Mmca)).Message);
    }

    [Fact]
    public void AnUntiedHeadTrainsOnlyWhenTrainLmHeadIsSet()
    {
        using var model = Tiny();
        var head = Assert.IsType<Linear>(model.lm.lm_head);
        Assert.False(head.weight!.requires_grad);
        Assert.True(model.lm.model.embed_tokens.weight!.requires_grad);
        model.Config.TrainLmHead = true;
        model.ApplyDefaultTrainability();
        Assert.True(head.weight!.requires_grad);
        Assert.False(model.lm.model.layers[0].parameters().First().requires_grad);
    }

    [Fact]
    public void ATiedHeadIsTheFirstLmVocabRowsOfTheGrownEmbedding()
    {
        using var scope = NewDisposeScope();
        using var preset = Tiny();
        var lmConfig = preset.LmConfig.Clone();
        lmConfig.TieWordEmbeddings = true;
        using var model = new VisualChatModel(preset.Config, lmConfig, seed: 5);
        Assert.True(model.EmbeddingRows > model.OutputVocabSize);
        Assert.Equal(new long[] { model.OutputVocabSize, model.HiddenSize }, model.HeadWeight.shape);
        var logits = model.forward(new VisualChatBatch(Ids([1, 40, 41]), null, null, [0], null)).Logits;
        Assert.Equal(model.OutputVocabSize, logits.shape[^1]);
    }

    [Fact]
    public void InterleaveChecksItsArguments_AndMaxImagesPerSample()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId;
        Assert.Equal("inputIds", Assert.Throws<ArgumentException>(() => model.Interleave(tensor(new long[] { 1, 2 }), null, null, [0], null)).ParamName);
        Assert.Equal("imageCounts", Assert.Throws<ArgumentException>(() => model.Interleave(Ids([1, 2]), null, null, [0, 0], null)).ParamName);
        Assert.Equal("batch", Assert.Throws<ArgumentException>(() => model.Loss(new VisualChatBatch(Ids([1, 2]), null, null, [0], null))).ParamName);

        model.Config.MaxImages = 1;
        var embeds = model.EncodeImages(Images(3));
        var ids = Ids([1, img, 40, img], [1, 41, 42, img]);
        var error = Assert.Throws<ArgumentException>(() => model.Interleave(ids, null, null, [2, 1], embeds));
        Assert.Contains("holds 2 images", error.Message);
        Assert.Contains("max_images 1", error.Message);
        model.Config.MaxImages = 2;
        model.Interleave(ids, null, null, [2, 1], embeds);   // at the limit: allowed
    }

    [Fact]
    public void PaddingRowsAreZero_NoLabelsGiveNoLabels_AndUnusedMemorySlotsAreEmpty()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny(AttentionMode.CausalCross);
        int img = model.Config.ImageTokenId, n = model.ImageTokens;
        var embeds = model.EncodeImages(Images(3));
        var input = model.Interleave(Ids([1, img, img, 40], [1, img, 41, 42]), null, null, [2, 1], embeds, padToMultipleOf: 8);
        Assert.Null(input.Labels);
        long longest = 2 + 2 * n, shorter = 3 + n;
        Assert.Equal(0, input.Length % 8);
        Assert.Equal(0f, input.InputsEmbeds[0].narrow(0, longest, input.Length - longest).abs().max().item<float>());
        Assert.Equal(0f, input.InputsEmbeds[1].narrow(0, shorter, input.Length - shorter).abs().max().item<float>());

        var memory = input.Memory!;
        Assert.Equal(new long[] { 2, 2 * n, model.HiddenSize }, memory.Embeddings.shape);
        Assert.True(memory.Embeddings[1].narrow(0, 0, n).allclose(embeds[2]));
        Assert.Equal(0f, memory.Embeddings[1].narrow(0, n, n).abs().max().item<float>());
        Assert.All(memory.Slots[1].narrow(0, n, n).data<long>().ToArray(), s => Assert.Equal(CrossAttentionMemory.UnusedSlot, s));
        Assert.Equal(Enumerable.Range(1, n).Select(p => (long)p), memory.Slots[1].narrow(0, 0, n).data<long>().ToArray());
    }

    [Fact]
    public void AppendChecksRowsImagesAcrossRoundsAndIds_AndTakesPromptPositions()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId;
        model.Config.MaxImages = 2;
        using (var pair = model.CreateConversation(batchSize: 2)) {
            Assert.Throws<ArgumentException>(() => model.Append(pair, [[1, 40], [1, 41]], [null]));
            Assert.Throws<ArgumentException>(() => model.Append(pair, [[1, 40]], [null, null]));
        }
        using var state = model.CreateConversation();
        Assert.Equal("idsPerRow", Assert.Throws<ArgumentException>(() => model.Append(state, [1, -1])).ParamName);
        Assert.Equal("idsPerRow", Assert.Throws<ArgumentException>(() => model.Append(state, [1, model.EmbeddingRows])).ParamName);

        int[] first = [0, 1, img, 40];                       // id 0 and the image id itself are inside the matrix
        model.Append(state, first, Images(1));
        Assert.Equal(model.PromptPositions(first.Length, 1), state.Length);
        Assert.Equal(first.Length + model.ImageTokens - 1, state.Length);
        Assert.Contains("would hold 3 images", Assert.Throws<ArgumentException>(() => model.Append(state, [41, img, img], Images(2))).Message);
        model.Append(state, [41, img], Images(1));           // two in all: the limit
        Assert.Equal(2 * model.ImageTokens + 4, state.Length);
        Assert.Equal(2, state.ImageCounts[0]);
    }

    [Fact]
    public void PrefillTakesIdsAndPixelsOnly_AndStepChecksStatesAndTokens()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        ICausalDecoder decoder = model;
        using var state = decoder.CreateState(64);
        Assert.Equal("prompt", Assert.Throws<ArgumentException>(() => model.Prefill(state, new DecoderPrompt([1], InputsEmbeds: zeros(1, 1, model.HiddenSize)))).ParamName);
        Assert.Equal("prompt", Assert.Throws<ArgumentException>(() => model.Prefill(state, new DecoderPrompt([1], Modality: zeros(1, 1, dtype: ScalarType.Int64)))).ParamName);
        model.Prefill(state, new DecoderPrompt([1, 40]));

        Assert.Equal("tokens", Assert.Throws<ArgumentException>(() => model.Step([state], [3, 4])).ParamName);
        Assert.Equal("tokens", Assert.Throws<ArgumentException>(() => model.Step([state], [-1])).ParamName);
        Assert.Equal("tokens", Assert.Throws<ArgumentException>(() => model.Step([state], [model.EmbeddingRows])).ParamName);
        using var pair = model.CreateConversation(batchSize: 2);
        model.Append(pair, [[1, 40], [1, 41]], [null, null]);
        Assert.Contains("single-sequence", Assert.Throws<ArgumentException>(() => model.Step([pair], [3])).Message);
    }

    [Fact]
    public void AnUnfusedCrossAttentionStepEqualsAFullForward_AndJoinsTheHistory()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var model = Tiny(AttentionMode.CausalCross);
        foreach (var layer in model.cross_attn!) layer.attn_gate.fill_(0.7);
        int img = model.Config.ImageTokenId;
        int[] prompt = [1, 40, img, 41];
        var pixels = Images(1);
        using var state = (VisualChat.Model.VisualChatConversationState)((ICausalDecoder)model).CreateState(64);
        model.Prefill(state, new DecoderPrompt(prompt, Pixels: pixels));
        model.Step([state], [42]);
        model.Step([state], [43]);
        Assert.Equal([.. prompt, 42, 43], state.History[0]);

        var full = model.forward(new VisualChatBatch(Ids([.. prompt, 42, 43]), null, null, [1], pixels)).Logits;
        long last = model.PromptPositions(prompt.Length + 2, 1) - 1;
        Assert.True(state.NextLogits!.reshape(-1).allclose(full[0, last], 1e-4, 1e-4), "the decode step's logits differ from the full forward's");
    }
}
