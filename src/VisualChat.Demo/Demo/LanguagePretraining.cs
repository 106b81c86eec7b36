using VisualChat.Attention;
using VisualChat.Conversations;
using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>
/// Stage 2: trains the tiny LLaMA from scratch on shapes conversations in the DSVC template where every image is its
/// description (the image marker, count, colour and kind word embeddings in the image's slots, marked image-modality
/// and read through multi-modal causal attention). The LM thereby learns the template, the questions and how to read
/// an image slot through MMCA's image branch; it is frozen afterwards. Trains through the project's trainer
/// (<see cref="DemoPretraining"/>); the loss is the model's (<see cref="LlamaForCausalLM.Loss"/>).
/// </summary>
public static class LanguagePretraining
{
    public static LlamaConfig Config(DemoRecipe recipe, int vocabSize) => new()
    {
        VocabSize = vocabSize, HiddenSize = recipe.LmHidden, IntermediateSize = recipe.LmIntermediate,
        NumHiddenLayers = recipe.LmLayers, NumAttentionHeads = recipe.LmHeads, NumKeyValueHeads = recipe.LmHeads,
        MaxPositionEmbeddings = 1024, TieWordEmbeddings = true, RmsNormEps = 1e-5, BosTokenId = SentencePieceModelBuilder.BosId,
        EosTokenId = System.Text.Json.Nodes.JsonValue.Create(SentencePieceModelBuilder.EosId),
    };

    /// <summary>The untrained LM (initialisation draws from libtorch's global generator: create before training
    /// stages run concurrently).</summary>
    public static LlamaForCausalLM Create(DemoRecipe recipe, int vocabSize)
    {
        manual_seed(recipe.Seed + 21);
        return new LlamaForCausalLM(Config(recipe, vocabSize), seed: recipe.Seed + 21);
    }

    /// <param name="runDir">The trainer's output folder (metrics.jsonl).</param>
    public static (LlamaForCausalLM Lm, float FinalLoss) Train(DemoRecipe recipe, LlamaForCausalLM lm, SentencePieceTokenizer tokenizer,
        ConversationTemplate template, MmcaAttentionKernel kernel, string runDir, TextWriter log)
    {
        lm.AttentionKernel = kernel;
        var words = DescriptionVocabulary.From(tokenizer, recipe.DescribeWithAnswerTokens);
        float loss = TrainOnFreshConversations(recipe, lm, tokenizer, template, "lm", runDir, log, samples =>
        {
            using var batch = DemoSamples.Collate(samples);
            long b = batch.InputIds.shape[0], l = batch.InputIds.shape[1], hidden = lm.Config.HiddenSize;
            var embeddings = lm.Embed(batch.InputIds).reshape(b * l, hidden);
            if (batch.ImageSlots.shape[0] > 0)
                embeddings = embeddings.index_copy(0, batch.ImageSlots, words.Embeddings(lm, batch.Scenes, recipe.ImageTokens));
            return lm.Loss(new CausalLMInput(InputsEmbeds: embeddings.reshape(b, l, hidden), TokenModality: batch.Modality), batch.Labels).Loss;
        });
        return (lm, loss);
    }

    /// <summary>
    /// The LM pretraining run shared by the demo and the ablation: <see cref="DemoRecipe.LmSteps"/> trainer steps, each on
    /// <see cref="DemoRecipe.LmBatch"/> conversations never seen before (text is free to generate), encoded with the
    /// recipe's image slots; <paramref name="loss"/> turns them into the step's loss. Freezes the LM afterwards and
    /// returns the last loss.
    /// </summary>
    public static float TrainOnFreshConversations(DemoRecipe recipe, LlamaForCausalLM lm, SentencePieceTokenizer tokenizer,
        ConversationTemplate template, string label, string runDir, TextWriter log, Func<DemoSample[], Tensor> loss)
    {
        lm.train();
        var generator = new ShapesConversationGenerator(recipe.Seed + 22);
        var config = DemoPretraining.Config(recipe, recipe.LmSteps, recipe.LmLearningRate, recipe.Seed + 22, runDir);
        return DemoPretraining.Train(config, lm, recipe.LmSteps,
            step => Enumerable.Range(step * recipe.LmBatch, recipe.LmBatch)
                .Select(i => DemoSamples.Encode(generator.Generate(i), template, tokenizer, recipe.ImageTokens)).ToArray(),
            loss, label, log);
    }
}
