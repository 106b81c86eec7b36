using System.Diagnostics;
using VisualChat.Attention;
using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Text;
using static TorchSharp.torch;
using VisualChat.Conversations;

namespace VisualChat.Demo;

/// <summary>
/// Stage 2: trains the tiny LLaMA from scratch on shapes conversations in the DSVC template where every image is its
/// description ("3 red circle", as the sum of those words' embeddings at the &lt;image&gt; position, marked
/// image-modality and read through multi-modal causal attention). The LM thereby learns the template, the questions
/// and how to read an image slot through MMCA's image branch; it is frozen afterwards.
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

    public static (LlamaForCausalLM Lm, float FinalLoss) Run(DemoRecipe recipe, SentencePieceTokenizer tokenizer, ConversationTemplate template,
        MmcaAttentionKernel kernel, TextWriter log) => Train(recipe, Create(recipe, tokenizer.VocabSize), tokenizer, template, kernel, log);

    public static (LlamaForCausalLM Lm, float FinalLoss) Train(DemoRecipe recipe, LlamaForCausalLM lm, SentencePieceTokenizer tokenizer,
        ConversationTemplate template, MmcaAttentionKernel kernel, TextWriter log)
    {
        lm.AttentionKernel = kernel;
        var words = DescriptionVocabulary.From(tokenizer, recipe.DescribeWithAnswerTokens);
        float loss = TrainOnFreshConversations(recipe, lm, tokenizer, template, "lm", log, samples =>
        {
            using var batch = DemoSamples.Collate(samples);
            var logits = DemoChatForward.Logits(lm, batch, DemoChatForward.DescriptionEmbeddings(lm, batch.Scenes, words, recipe.ImageTokens));
            return DemoChatForward.Loss(logits, batch.Labels);
        });
        return (lm, loss);
    }

    /// <summary>
    /// The LM pretraining loop shared by the demo and the ablation: <see cref="DemoRecipe.LmSteps"/> AdamW steps, each on
    /// <see cref="DemoRecipe.LmBatch"/> conversations never seen before (text is free to generate), encoded with the
    /// recipe's image slots; <paramref name="loss"/> turns them into the step's loss inside the step's dispose scope.
    /// Freezes the LM afterwards and returns the last loss.
    /// </summary>
    public static float TrainOnFreshConversations(DemoRecipe recipe, LlamaForCausalLM lm, SentencePieceTokenizer tokenizer,
        ConversationTemplate template, string label, TextWriter log, Func<DemoSample[], Tensor> loss)
    {
        lm.train();
        var generator = new ShapesConversationGenerator(recipe.Seed + 22);
        using var optimization = new DemoOptimization(lm.parameters(), recipe.LmLearningRate, recipe.LmSteps, recipe.WarmupSteps,
            weightDecay: recipe.WeightDecay);
        float last = float.NaN;
        var clock = Stopwatch.StartNew();
        for (int step = 0; step < recipe.LmSteps; step++)
        {
            var samples = Enumerable.Range(step * recipe.LmBatch, recipe.LmBatch)
                .Select(i => DemoSamples.Encode(generator.Generate(i), template, tokenizer, recipe.ImageTokens)).ToArray();
            using var scope = NewDisposeScope();
            last = optimization.Step(step, loss(samples));
            if (step % 250 == 0 || step == recipe.LmSteps - 1)
                log.WriteLine($"  {label} step {step,4}: loss {last:F4} ({clock.Elapsed.TotalSeconds:F0} s)");
        }
        foreach (var p in lm.parameters()) p.requires_grad = false;
        lm.eval();
        return last;
    }
}
