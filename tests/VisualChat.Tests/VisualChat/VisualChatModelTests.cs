using TorchSharp;
using VisualChat.Attention;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Tests.Multimodal;

public class VisualChatModelTests
{
    const long P = (long)TokenModality.Padding, T = (long)TokenModality.Text, I = (long)TokenModality.Image;

    static VisualChatModel Tiny(AttentionMode mode = AttentionMode.Mmca, long seed = 3) => VisualChatPresets.Create(VisualChatPresets.Tiny, seed, mode);

    /// <summary>Distinct constant images: image k is filled with 0.1·(k+1) (minus 0.5 so signs differ).</summary>
    static Tensor Images(int count, int offset = 0) =>
        stack(Enumerable.Range(offset, count).Select(k => full(new long[] { 3, 32, 32 }, 0.1f * (k + 1) - 0.5f)).ToArray());

    static Tensor Ids(params int[][] rows) => tensor(rows.SelectMany(r => r.Select(i => (long)i)).ToArray(), new long[] { rows.Length, rows[0].Length });

    static void OpenCrossGates(VisualChatModel model, double value = 0.7)
    {
        using var noGrad = no_grad();
        foreach (var layer in model.cross_attn!) layer.attn_gate.fill_(value);
    }

    [Fact]
    public void ImageKLandsAtPlaceholderK()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId;
        var pixels = Images(3);
        var ids = Ids([1, 40, img, 41, img, 42, 43, img, 44]);
        var output = model.forward(new VisualChatBatch(ids, null, null, [3], pixels));
        int n = model.ImageTokens;
        var expected = model.EncodeImages(pixels);
        var embeds = output.Input.InputsEmbeds[0];
        int[] starts = [2, 2 + n + 1, 2 + n + 1 + n + 2];
        for (int k = 0; k < 3; k++) {
            Assert.True(embeds.narrow(0, starts[k], n).allclose(expected[k], 0, 0), $"image {k} is not at placeholder {k}");
            for (int other = 0; other < 3; other++)
                if (other != k) Assert.False(embeds.narrow(0, starts[k], n).allclose(expected[other], 1e-3, 1e-3));
        }
        // text around the images keeps its embedding rows
        Assert.True(embeds[starts[1] - 1].allclose(model.Embed(tensor(new long[] { 41 }))[0]));
    }

    [Fact]
    public void ModalityMapLabelsAndPaddingFollowThePlaceholders()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId, n = model.ImageTokens;
        var ids = Ids([1, 50, img, 51, 52, 2, 0, 0], [1, 60, 61, 62, 2, 0, 0, 0]);
        var labels = Ids([-100, -100, -100, -100, 52, 2, -100, -100], [-100, -100, 61, 62, 2, -100, -100, -100]);
        var mask = Ids([1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]);
        var imageEmbeds = randn(1, n, model.HiddenSize);
        var input = model.Interleave(ids, labels, mask, [1, 0], imageEmbeds);
        long expectedLength = (5 + n + 7) / 8 * 8;
        Assert.Equal(expectedLength, input.Length);
        var modality = input.Modality.data<long>().ToArray();
        var outLabels = input.Labels!.data<long>().ToArray();
        var outMask = input.AttentionMask.data<long>().ToArray();
        long L = input.Length;
        var row0 = new List<long> { T, T }; row0.AddRange(Enumerable.Repeat(I, n)); row0.AddRange([T, T, T]);
        row0.AddRange(Enumerable.Repeat(P, (int)L - row0.Count));
        var row1 = new List<long> { T, T, T, T, T }; row1.AddRange(Enumerable.Repeat(P, (int)L - 5));
        Assert.Equal(row0.Concat(row1), modality);
        Assert.Equal(modality.Select(m => m == P ? 0L : 1L), outMask);
        var labels0 = new List<long> { -100, -100 }; labels0.AddRange(Enumerable.Repeat(-100L, n)); labels0.AddRange([-100, 52, 2]);
        labels0.AddRange(Enumerable.Repeat(-100L, (int)L - labels0.Count));
        var labels1 = new List<long> { -100, -100, 61, 62, 2 }; labels1.AddRange(Enumerable.Repeat(-100L, (int)L - 5));
        Assert.Equal(labels0.Concat(labels1), outLabels);
    }

    [Fact]
    public void WrongPlaceholderCountIsReported()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        var ids = Ids([1, model.Config.ImageTokenId, 5]);
        var error = Assert.Throws<ArgumentException>(() => model.Interleave(ids, null, null, [2], randn(2, model.ImageTokens, model.HiddenSize)));
        Assert.Contains("Sample 0 has 1", error.Message);
    }

    [Fact]
    public void LossCountsOnlyAnswerTokens()
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var logits = randn(2, 6, 10);
        var labels = Ids([-100, -100, -100, 4, 5, -100], [-100, 7, -100, -100, -100, -100]);
        var (loss, count) = CausalLMLoss.Shifted(logits, labels);
        Assert.Equal(3, count);
        var logp = logits.log_softmax(-1);
        double expected = -(logp[0, 2, 4].item<float>() + logp[0, 3, 5].item<float>() + logp[1, 0, 7].item<float>()) / 3;
        Assert.Equal(expected, loss.item<float>(), 5);
        // logits at positions whose (shifted) target is masked do not matter
        var changed = logits.clone();
        changed[0, 0] = randn(10) * 5; changed[0, 4] = randn(10) * 5; changed[1, 3] = randn(10) * 5;
        Assert.Equal(loss.item<float>(), CausalLMLoss.Shifted(changed, labels).Loss.item<float>(), 6);
    }

    [Fact]
    public void ModelLossIsTheMeanOverAnswerTokensAndIgnoresPromptAndPlaceholderTargets()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId, n = model.ImageTokens;
        var ids = Ids([1, 50, img, 51, 52, 53, 2, 0]);
        var mask = Ids([1, 1, 1, 1, 1, 1, 1, 0]);
        var answerOnly = Ids([-100, -100, -100, -100, -100, 53, 2, -100]);
        var output = model.forward(new VisualChatBatch(ids, answerOnly, mask, [1], Images(1)));
        Assert.Equal(2, output.AnswerTokens);
        // by hand: answer 53 sits after 1, 50, n image tokens, 51, 52 → predicted at position n + 3; EOS at n + 4
        var logp = output.Logits[0].log_softmax(-1);
        double expected = -(logp[n + 3, 53].item<float>() + logp[n + 4, 2].item<float>()) / 2;
        Assert.Equal(expected, output.Loss!.item<float>(), 5);
        // a target written on the placeholder is dropped: every image token gets -100
        var placeholderTarget = Ids([-100, -100, 77, -100, -100, 53, 2, -100]);
        var again = model.forward(new VisualChatBatch(ids, placeholderTarget, mask, [1], Images(1)));
        Assert.Equal(2, again.AnswerTokens);
        Assert.Equal(output.Loss.item<float>(), again.Loss!.item<float>());
    }

    static readonly global::VisualChat.Conversations.FileImageRef Unused = new("unused.png");

    /// <summary>The conversations tokenized with the model's template and collated as the trainer does.</summary>
    static (global::VisualChat.Conversations.TokenizedSample[] Samples, global::VisualChat.Data.TrainingBatch Batch) Collate(
        VisualChatModel model, params global::VisualChat.Conversations.Conversation[] conversations)
    {
        var template = new global::VisualChat.Conversations.ConversationTemplate(model.Config.TemplateOptions);
        var samples = conversations.Select(c => template.Tokenize(c, model.Tokenizer!)).ToArray();
        return (samples, new global::VisualChat.Data.Collator(model.Tokenizer!.EosId).Collate(samples));
    }

    [Fact]
    public void CollatedTemplateBatchTrains()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        var (samples, batch) = Collate(model,
            new("test", [new([Unused, Unused], "what is this", "a red cat"), global::VisualChat.Conversations.Round.TextOnly("and this", "a blue dog")], []),
            new("test", [global::VisualChat.Conversations.Round.TextOnly("what color", "red")], []));
        using var _ = batch;
        var output = model.forward(batch.ToModelInput(Images(2)));
        long expectedTargets = samples.Sum(s => s.Labels.Count(l => l != -100));
        Assert.Equal(expectedTargets, output.AnswerTokens);
        Assert.Equal(0, output.Input.Length % 8);
        Assert.Equal(samples[0].ExpandedLength(model.ImageTokens), output.Input.AttentionMask[0].sum().item<long>());
        Assert.True(float.IsFinite(output.Loss!.item<float>()));
        output.Loss.backward();
        Assert.True(model.projection.parameters().First().grad!.abs().sum().item<float>() > 0);
    }

    [Fact]
    public void TrainingLossOnTargetRowsEqualsTheLossOfTheFullLogits_ValueAndGradients()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        var (_, batch) = Collate(model,
            new("test", [new([Unused], "what is this", "a red cat"), global::VisualChat.Conversations.Round.TextOnly("and this", "a blue dog")], []),
            new("test", [new([Unused], "what color", "red")], []));
        using var __ = batch;
        var pixels = Images(2);
        var projection = model.projection.parameters().First();
        var embeddings = model.lm.model.embed_tokens.weight!;

        var full = model.forward(batch.ToModelInput(pixels));
        full.Loss!.backward();
        var fullProjectionGrad = projection.grad!.clone();
        var fullEmbeddingGrad = embeddings.grad!.clone();
        projection.grad = null; embeddings.grad = null;

        var (loss, answerTokens) = model.Loss(batch.ToModelInput(pixels));
        loss.backward();
        Assert.Equal(full.AnswerTokens, answerTokens);
        Assert.Equal(full.Loss.item<float>(), loss.item<float>(), 5);
        Assert.True(fullProjectionGrad.allclose(projection.grad!, rtol: 1e-4, atol: 1e-6), "projection gradients differ");
        Assert.True(fullEmbeddingGrad.allclose(embeddings.grad!, rtol: 1e-4, atol: 1e-6), "embedding gradients differ");

        // The language model's own training loss is the same function of its logits.
        var ids = batch.InputIds;
        var logits = model.lm.Forward(new CausalLMInput(InputIds: ids)).Logits;
        var (lmLoss, targets) = model.lm.Loss(new CausalLMInput(InputIds: ids), batch.Labels);
        var (reference, referenceTargets) = CausalLMLoss.Shifted(logits, batch.Labels);
        Assert.Equal(referenceTargets, targets);
        Assert.Equal(reference.item<float>(), lmLoss.item<float>(), 5);
    }

    [Fact]
    public void BatchWithoutAnswerTokensGivesZeroLossAndBackwardWorks()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId;
        var ids = Ids([1, 50, img, 51, 2], [1, 60, 61, 62, 2]);
        var labels = full(2, 5, -100L);
        var output = model.forward(new VisualChatBatch(ids, labels, null, [1, 0], Images(1)));
        Assert.Equal(0L, output.AnswerTokens);
        Assert.Equal(0f, output.Loss!.item<float>());
        output.Loss.backward();
        var gradient = model.projection.parameters().First().grad;
        Assert.NotNull(gradient);
        Assert.Equal(0f, gradient!.abs().sum().item<float>());
    }

    [Fact]
    public void TextOnlyAndImageSamplesTrainTogether()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId;
        var ids = Ids([1, 50, img, 51, 52, 2], [1, 60, 61, 62, 2, 0]);
        var labels = Ids([-100, -100, -100, -100, 52, 2], [-100, -100, 61, 62, 2, -100]);
        var mask = Ids([1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]);
        var output = model.forward(new VisualChatBatch(ids, labels, mask, [1, 0], Images(1)));
        Assert.True(float.IsFinite(output.Loss!.item<float>()) && output.Loss.item<float>() > 0);
        output.Loss.backward();
        Assert.True(model.projection.parameters().First().grad!.abs().sum().item<float>() > 0);
        Assert.True(model.lm.model.embed_tokens.weight!.grad!.abs().sum().item<float>() > 0);
    }

    [Fact]
    public void OnlyProjectionAndEmbeddingsTrainByDefault()
    {
        using var model = Tiny();
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToArray();
        Assert.Contains("lm.model.embed_tokens.weight", trainable);
        Assert.All(trainable, name => Assert.True(name.StartsWith("projection.") || name == "lm.model.embed_tokens.weight", name));
        Assert.Contains(trainable, n => n.StartsWith("projection."));
        Assert.True(model.VisionEncoder.IsFrozen);
        Assert.Equal(model.Config.ImageTokenId + 1, model.EmbeddingRows);
        using var cross = Tiny(AttentionMode.CausalCross);
        Assert.Contains(cross.named_parameters(), p => p.name.StartsWith("cross_attn.") && p.parameter.requires_grad);
    }

    [Fact]
    public void AddedEmbeddingRowStartsAtTheMeanOfTheVocabulary()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        var weight = model.lm.model.embed_tokens.weight!;
        var mean = weight.narrow(0, 0, model.Config.LmVocabSize).mean(new long[] { 0 });
        Assert.True(weight[model.Config.ImageTokenId].allclose(mean, 1e-6, 1e-6));
    }

    /// <summary>Decodes from the state's appended prompt, leaving the answer in the cache as chat does.</summary>
    static GenerationResult Decode(VisualChatModel model, VisualChatConversationState state, GenerationOptions options) =>
        new GenerationEngine(model).Generate(new GenerationRequest(state, null, options) { KeepFinalToken = true });

    [Fact]
    public void GeneratedTokensUseTheTrainedEmbedding()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId;
        int[] prompt = [1, 50, img, 51, 52];
        var options = new GenerationOptions { MaxNewTokens = 1, StopTokenIds = [] };
        Tensor After()
        {
            using var state = model.CreateConversation();
            model.Append(state, prompt, Images(1));
            var token = Decode(model, state, options).TokenIds[0];
            Assert.DoesNotContain(token, prompt);
            return state.NextLogits!.clone().MoveToOuterDisposeScope();
        }
        var before = After();
        using var probe = model.CreateConversation();
        model.Append(probe, prompt, Images(1));
        int generated = Decode(model, probe, options).TokenIds[0];
        using (no_grad()) model.lm.model.embed_tokens.weight![generated].add_(1.0f);
        var after = After();
        Assert.False(before.allclose(after, 1e-4, 1e-4), "changing the generated token's embedding row must change the next logits");
    }

    [Theory]
    [InlineData(AttentionMode.Causal)]
    [InlineData(AttentionMode.Mmca)]
    [InlineData(AttentionMode.CausalCross)]
    public void CachedConversationEqualsFullForward(AttentionMode mode)
    {
        using var scope = NewDisposeScope();
        using var model = Tiny(mode);
        if (mode == AttentionMode.CausalCross) OpenCrossGates(model);
        model.eval();
        int img = model.Config.ImageTokenId;
        int[] round1 = [1, 50, img, 51, 52];
        int[] round2 = [1, 53, img, 54];
        using var state = model.CreateConversation();
        model.Append(state, round1, Images(1));
        var answer = Decode(model, state, new GenerationOptions { MaxNewTokens = 3, StopTokenIds = [] }).TokenIds;
        var stepLogits = new List<Tensor> { state.NextLogits!.clone() };
        model.Append(state, round2, Images(1, offset: 1));
        var afterRound2 = state.NextLogits!.clone();
        foreach (var token in new[] { 55, 56 }) {
            model.Append(state, [token]);
            stepLogits.Add(state.NextLogits!.clone());
        }
        Assert.Equal(2, model.EncodedImageCount);

        var all = round1.Concat(answer).Concat(round2).Concat([55, 56]).ToArray();
        using var noGrad = no_grad();
        var input = model.Interleave(Ids(all), null, null, [2], model.EncodeImages(Images(2)), padToMultipleOf: 1);
        var full = model.RunLanguageModel(input.InputsEmbeds, input.AttentionMask, input.Modality, input.Memory, null, lastTokenOnly: false)[0];
        long lengthAfterAnswer = round1.Length - 1 + model.ImageTokens + answer.Count;
        long lengthAfterRound2 = lengthAfterAnswer + round2.Length - 1 + model.ImageTokens;
        Assert.True(full[lengthAfterAnswer - 1].allclose(stepLogits[0][0], 1e-5, 1e-5), "after the generated answer");
        Assert.True(full[lengthAfterRound2 - 1].allclose(afterRound2[0], 1e-5, 1e-5), "after round 2");
        Assert.True(full[lengthAfterRound2].allclose(stepLogits[1][0], 1e-5, 1e-5), "first token after round 2");
        Assert.True(full[lengthAfterRound2 + 1].allclose(stepLogits[2][0], 1e-5, 1e-5), "second token after round 2");
    }

    [Fact]
    public void SecondRoundEncodesOnlyItsNewImage()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId;
        using var state = model.CreateConversation();
        model.Append(state, [1, 50, img, 51], Images(1));
        Assert.Equal(1, model.EncodedImageCount);
        long lengthAfterRound1 = state.Length;
        Decode(model, state, new GenerationOptions { MaxNewTokens = 2, StopTokenIds = [] });
        Assert.Equal(lengthAfterRound1 + 2, state.Length);
        model.Append(state, [1, 52, img, 53], Images(1, offset: 1));
        Assert.Equal(2, model.EncodedImageCount);
        Assert.Equal(lengthAfterRound1 + 2 + 3 + model.ImageTokens, state.Length);
        Assert.Equal(2, state.ImageCounts[0]);
    }

    [Fact]
    public void FeatureCacheSkipsImagesAlreadyEncodedWithoutChangingTheOutput()
    {
        using var scope = NewDisposeScope();
        using var model = Tiny();
        int img = model.Config.ImageTokenId;
        var batch = new VisualChatBatch(Ids([1, 50, img, 51, img]), null, null, [2], Images(2));
        var uncached = model.forward(batch).Logits;
        Assert.Equal(2, model.EncodedImageCount);
        using var cache = new global::VisualChat.Vision.Encoders.VisionFeatureCache(1 << 20);
        model.FeatureCache = cache;
        Assert.True(model.forward(batch).Logits.allclose(uncached, 1e-6, 1e-6));
        Assert.Equal(4, model.EncodedImageCount);
        Assert.True(model.forward(batch).Logits.allclose(uncached, 1e-6, 1e-6));
        Assert.Equal(4, model.EncodedImageCount);
    }

    [Theory]
    [InlineData(AttentionMode.Mmca)]
    [InlineData(AttentionMode.Causal)]
    [InlineData(AttentionMode.CausalCross)]
    public void BatchedGenerationEqualsUnbatched(AttentionMode mode)
    {
        using var scope = NewDisposeScope();
        using var model = Tiny(mode, seed: 5);
        if (mode == AttentionMode.CausalCross) OpenCrossGates(model);
        int img = model.Config.ImageTokenId;
        int[][] prompts = [[1, 50, img, 51, 52, 53, 54], [1, 60, 61, img, img, 62]];
        Tensor?[] pixels = [Images(1), Images(2, offset: 1)];
        int[][] second = [[1, 70], [1, 71, 72, 73, 74]];
        var options = new GenerationOptions { MaxNewTokens = 4, StopTokenIds = [] };

        // Batched prefill: left-padded rows give each conversation's own next-token logits.
        using var batched = model.CreateConversation(2);
        model.Append(batched, prompts, pixels);
        // Batched decode: both conversations run as sequences of one engine batch, over two rounds.
        var engine = new GenerationEngine(model);
        using var rowA = model.CreateConversation();
        using var rowB = model.CreateConversation();
        VisualChatConversationState[] rows = [rowA, rowB];
        var first = engine.Generate(rows.Select((state, b) => new GenerationRequest(state, new DecoderPrompt(prompts[b], pixels[b]), options) { KeepFinalToken = true }).ToArray());
        var next = engine.Generate(rows.Select((state, b) => new GenerationRequest(state, new DecoderPrompt(second[b]), options) { KeepFinalToken = true }).ToArray());
        for (int b = 0; b < 2; b++) {
            using var single = model.CreateConversation();
            model.Append(single, prompts[b], pixels[b]);
            Assert.True(batched.NextLogits![b].allclose(single.NextLogits![0], 1e-5, 1e-5), $"batched prefill row {b}");
            Assert.Equal(Decode(model, single, options).TokenIds, first[b].TokenIds);
            model.Append(single, second[b]);
            Assert.Equal(Decode(model, single, options).TokenIds, next[b].TokenIds);
        }
    }

    [Fact]
    public void CrossModeAtInitialisationEqualsCausalMode()
    {
        using var scope = NewDisposeScope();
        using var causal = Tiny(AttentionMode.Causal, seed: 9);
        using var cross = Tiny(AttentionMode.CausalCross, seed: 9);
        int img = causal.Config.ImageTokenId;
        var batch = new VisualChatBatch(Ids([1, 50, img, 51, 52, img, 53]), null, null, [2], Images(2));
        var a = causal.forward(batch).Logits;
        var b = cross.forward(batch).Logits;
        Assert.Equal(0f, (a - b).abs().max().item<float>());
        OpenCrossGates(cross);
        Assert.True((cross.forward(batch).Logits - a).abs().max().item<float>() > 1e-4, "an open gate must change the output");
    }

    [Theory]
    [InlineData(AttentionMode.Mmca)]
    [InlineData(AttentionMode.CausalCross)]
    public void SaveLoadRoundTrip(AttentionMode mode)
    {
        using var scope = NewDisposeScope();
        using var model = Tiny(mode);
        if (mode == AttentionMode.CausalCross) OpenCrossGates(model, 0.3);
        using (no_grad()) model.lm.model.embed_tokens.weight![model.Config.ImageTokenId].add_(0.25f);
        var folder = Path.Combine(Path.GetTempPath(), "vchat-model-" + Guid.NewGuid().ToString("N"));
        try {
            model.Save(folder);
            foreach (var file in new[] { "visualchat.json", "lm/config.json", "lm/model.safetensors", "lm/tokenizer.model", "vision/config.json",
                         "vision/model.safetensors", "vision/preprocessor_config.json", "projection.safetensors", "embeddings.safetensors" })
            {
                Assert.True(File.Exists(Path.Combine(folder, file)), file);
            }

            Assert.Equal(mode == AttentionMode.CausalCross, File.Exists(Path.Combine(folder, "cross_attn.safetensors")));
            using var loaded = VisualChatModel.Load(folder);
            Assert.Equal(mode, loaded.Config.AttentionMode);
            Assert.Equal(model.Config.ImageTokenId, loaded.Tokenizer!.TokenToId("<image>"));
            int img = model.Config.ImageTokenId;
            var batch = new VisualChatBatch(Ids([1, 50, img, 51, 52, img, 53]), null, null, [2], Images(2));
            Assert.True(model.forward(batch).Logits.allclose(loaded.forward(batch).Logits, 0, 0));
            Assert.Equal(model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name),
                loaded.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name));

            File.Delete(Path.Combine(folder, "projection.safetensors"));
            Assert.Throws<FileNotFoundException>(() => VisualChatModel.Load(folder));
        } finally {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void ConfigErrorsNameTheKey()
    {
        var json = new VisualChatConfig { LmVocabSize = 10, ImageTokenId = 10 }.ToJson();
        Assert.Equal(AttentionMode.Mmca, VisualChatConfig.Parse(json).AttentionMode);
        var error = Assert.Throws<InvalidDataException>(() => VisualChatConfig.Parse(json.Replace("\"mmca\"", "\"flash\"")));
        Assert.Contains("attention_mode", error.Message);
        error = Assert.Throws<InvalidDataException>(() => VisualChatConfig.Parse(json.Replace("\"image_token_id\": 10", "\"image_token_id\": 3")));
        Assert.Contains("image_token_id", error.Message);
        error = Assert.Throws<InvalidDataException>(() => VisualChatConfig.Parse(json.Replace("\"baseline\"", "\"mlp\"")));
        Assert.Contains("projection", error.Message);
    }

    [Fact]
    public void PresetDescriptionsMatchTheBuiltModel()
    {
        using var model = VisualChatPresets.Create(VisualChatPresets.Tiny);
        var description = VisualChatPresets.Describe(VisualChatPresets.Tiny);
        Assert.Equal(model.parameters().Sum(p => p.numel()), description.TotalParameters);
        Assert.Equal(model.parameters().Where(p => p.requires_grad).Sum(p => p.numel()), description.TrainableParameters);
        Assert.Equal(model.ImageTokens, description.ImageTokens);
        var seven = VisualChatPresets.Describe(VisualChatPresets.ClipL14Llama2_7B);
        Assert.InRange(seven.LanguageModelParameters, 6_700_000_000, 6_800_000_000);
        Assert.InRange(seven.VisionParameters, 300_000_000, 310_000_000);
        Assert.Equal(257, seven.ImageTokens);
        Assert.InRange(VisualChatPresets.Describe(VisualChatPresets.Qwen448Llama2_70B).TotalParameters, 70_000_000_000, 72_500_000_000);
        Assert.Throws<ArgumentException>(() => VisualChatPresets.Create(VisualChatPresets.Qwen448Llama2_13B));
        Assert.Equal(4, VisualChatPresets.Names.Count);
    }

    [Fact]
    public void EncoderParameterFormulasMatchBuiltEncoders()
    {
        var qwenConfig = global::VisualChat.Vision.Encoders.QwenVisionConfig.Tiny();
        using var qwen = new global::VisualChat.Vision.Encoders.QwenVisionTransformer(qwenConfig);
        Assert.Equal(qwen.parameters().Sum(p => p.numel()), VisualChatPresets.QwenParameters(qwenConfig));
        var clipConfig = global::VisualChat.Vision.Encoders.ClipVisionConfig.Tiny();
        using var clip = new global::VisualChat.Vision.Encoders.ClipVisionModel(clipConfig);
        Assert.Equal(clip.parameters().Sum(p => p.numel()), VisualChatPresets.ClipParameters(clipConfig));
    }
}
