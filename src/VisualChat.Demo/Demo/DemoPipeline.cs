using System.Diagnostics;
using TorchSharp;
using VisualChat.Attention;
using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using static TorchSharp.torch;
using VisualChat.Conversations;

namespace VisualChat.Demo;

/// <summary>Wall-clock and process CPU seconds of one stage.</summary>
public sealed record StageTiming(string Stage, double WallSeconds, double CpuSeconds);

/// <summary>What <see cref="DemoPipeline.Run"/> measured. <see cref="Accuracy"/> is the VisualChat model (images through
/// encoder + projection); <see cref="DescribedAccuracy"/> is the frozen LM with the true descriptions in the image
/// slots, the ceiling the projection can reach.</summary>
public sealed record DemoResult(
    IReadOnlyDictionary<ShapesQuestion, double> AccuracyPerKind,
    double Accuracy,
    IReadOnlyDictionary<ShapesQuestion, double> DescribedAccuracyPerKind,
    double DescribedAccuracy,
    VisionReport Vision,
    IReadOnlyList<StageTiming> Timings,
    int VocabSize,
    string ModelFolder,
    IReadOnlyList<DemoChatRound> Chat)
{
    public double TotalWallSeconds => Timings.Sum(t => t.WallSeconds);
    public double TotalCpuSeconds => Timings.Sum(t => t.CpuSeconds);
}

/// <summary>
/// <c>vchat demo</c>: data generation → vision pretraining → LM pretraining → DeepSpeed-VisualChat training →
/// evaluation on held-out synthetic multi-image conversations, all seeded from <see cref="DemoRecipe.Seed"/>.
/// </summary>
public static class DemoPipeline
{
    /// <param name="cacheFolder">When set, pretrained stages are reused from (and stored in) this folder; see <see cref="DemoStageCache"/>.</param>
    public static DemoResult Run(DemoRecipe recipe, string outputFolder, TextWriter log, string? cacheFolder = null)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        Directory.CreateDirectory(outputFolder);
        torch.set_num_threads(recipe.Threads);
        var timings = new List<StageTiming>();
        T Stage<T>(string name, Func<T> work)
        {
            log.WriteLine($"[{name}]");
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            var clock = Stopwatch.StartNew();
            var result = work();
            var timing = new StageTiming(name, clock.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
            timings.Add(timing);
            log.WriteLine($"  {name}: {timing.WallSeconds:F1} s wall, {timing.CpuSeconds:F1} s CPU");
            return result;
        }

        var template = new ConversationTemplate(new ConversationTemplateOptions { SystemPrompt = recipe.SystemPrompt });
        var chatGenerator = new ShapesConversationGenerator(recipe.Seed + 2);
        var evalGenerator = new ShapesConversationGenerator(recipe.Seed + 3);

        var (tokenizer, chatSamples, evalSamples) = Stage("data", () =>
        {
            var corpusGenerator = new ShapesConversationGenerator(recipe.Seed + 1);
            var corpus = Enumerable.Range(0, 2000).Select(i => template.RenderText(DemoSamples.ToConversation(corpusGenerator.Generate(i))));
            var tokenizer = DemoTokenizer.Build(corpus, recipe.BpeMerges);
            tokenizer.Save(Path.Combine(outputFolder, "tokenizer"));
            var chat = Enumerable.Range(0, recipe.ChatConversations).Select(i => DemoSamples.Encode(chatGenerator.Generate(i), template, tokenizer, recipe.ImageTokens)).ToArray();
            var eval = Enumerable.Range(0, recipe.EvalConversations).Select(i => DemoSamples.Encode(evalGenerator.Generate(i), template, tokenizer, recipe.ImageTokens)).ToArray();
            if (recipe.WriteEvalJsonl) evalGenerator.WriteJsonl(Path.Combine(outputFolder, "eval"), "shapes-eval.jsonl", 0, recipe.EvalConversations);
            log.WriteLine($"  vocab {tokenizer.VocabSize}; mean tokens per conversation {chat.Average(s => s.InputIds.Length):F1}");
            return (tokenizer, chat, eval);
        });

        var kernel = MmcaAttentionKernel.Instance;
        var untrainedVision = VisionPretraining.Create(recipe);
        var untrainedLm = LanguagePretraining.Create(recipe, tokenizer.VocabSize);
        var cache = cacheFolder is null ? null : new DemoStageCache(cacheFolder);
        (ClipVisionModel Encoder, VisionReport Report) PretrainVision(TextWriter stageLog)
        {
            if (cache is null) return VisionPretraining.Train(recipe, untrainedVision, stageLog);
            var key = DemoStageCache.Key("vision", recipe.Seed, recipe.ImageSize, recipe.PatchSize, recipe.VisionWidth, recipe.VisionLayers,
                recipe.VisionHeads, recipe.VisionSteps, recipe.VisionBatch, recipe.VisionLearningRate, recipe.WarmupSteps, recipe.WeightDecay);
            var (report, cached) = cache.GetOrTrain(key, untrainedVision.Encoder, () => VisionPretraining.Train(recipe, untrainedVision, stageLog).Report, stageLog);
            if (cached)
            {
                untrainedVision.Encoder.Freeze();
                untrainedVision.KindHead.Dispose(); untrainedVision.ColourHead.Dispose(); untrainedVision.CountHead.Dispose();
            }
            return (untrainedVision.Encoder, report);
        }
        LlamaForCausalLM PretrainLm(TextWriter stageLog)
        {
            if (cache is null) return LanguagePretraining.Train(recipe, untrainedLm, tokenizer, template, kernel, stageLog).Lm;
            var key = DemoStageCache.Key("lm", recipe.Seed, recipe.BpeMerges, recipe.SystemPrompt, recipe.DescribeWithAnswerTokens, recipe.ImageTokens, tokenizer.VocabSize,
                recipe.LmHidden, recipe.LmLayers, recipe.LmHeads, recipe.LmIntermediate, recipe.LmSteps, recipe.LmBatch, recipe.LmLearningRate,
                recipe.WarmupSteps, recipe.WeightDecay);
            var (_, cached) = cache.GetOrTrain(key, untrainedLm, () => LanguagePretraining.Train(recipe, untrainedLm, tokenizer, template, kernel, stageLog).FinalLoss, stageLog);
            if (cached)
            {
                untrainedLm.AttentionKernel = kernel;
                foreach (var p in untrainedLm.parameters()) p.requires_grad = false;
                untrainedLm.eval();
            }
            return untrainedLm;
        }

        ClipVisionModel encoder;
        VisionReport vision;
        LlamaForCausalLM lm;
        if (recipe.ParallelPretraining)
        {
            // The two stages are independent and each runs single-threaded inside libtorch, so on two cores they take the
            // time of the longer one. Safe because no temporary Scalar reaches libtorch (see TorchScalars) and each
            // thread's tensors live in its own dispose scopes; both modules were initialised above, before the threads.
            (encoder, vision, lm) = Stage("pretraining (vision ‖ LM)", () =>
            {
                var visionLog = new StringWriter();
                var visionTask = Task.Factory.StartNew(() =>
                {
                    torch.set_num_threads(recipe.Threads);
                    var clock = Stopwatch.StartNew();
                    var result = PretrainVision(visionLog);
                    visionLog.WriteLine($"  vision pretraining: {clock.Elapsed.TotalSeconds:F1} s");
                    return result;
                }, TaskCreationOptions.LongRunning);
                var lmLog = new StringWriter();
                var lmClock = Stopwatch.StartNew();
                var pretrainedLm = PretrainLm(lmLog);
                lmLog.WriteLine($"  lm pretraining: {lmClock.Elapsed.TotalSeconds:F1} s");
                var (pretrainedEncoder, report) = visionTask.GetAwaiter().GetResult();
                log.Write(visionLog);
                log.Write(lmLog);
                return (pretrainedEncoder, report, pretrainedLm);
            });
        }
        else
        {
            (encoder, vision) = Stage("vision pretraining", () => PretrainVision(log));
            lm = Stage("lm pretraining", () => PretrainLm(log));
        }
        var described = EvaluateDescribed(recipe, lm, tokenizer, evalSamples);
        log.WriteLine($"  LM with true descriptions: {described}");
        var projection = VisualChatTraining.CreateProjection(recipe);

        Stage("visualchat training", () =>
        {
            using var features = VisualChatTraining.EncodeImages(encoder, chatSamples.SelectMany(s => s.Scenes).ToArray(), recipe.ImageSize);
            return VisualChatTraining.Run(recipe, lm, projection, chatSamples, features, VisualChatTraining.FirstImageIndex(chatSamples), log);
        });

        var visual = Stage("evaluation", () => EvaluateVisual(recipe, lm, encoder, projection, evalSamples));
        log.WriteLine($"  VisualChat (images): {visual}");
        log.WriteLine($"  LM with true descriptions (after LM pretraining): {described}");
        string modelFolder = Path.Combine(outputFolder, "model");
        var chat = Stage("model folder + chat", () =>
        {
            using (var assembled = DemoModel.Assemble(recipe, lm, encoder, projection, tokenizer))
                assembled.Save(modelFolder);
            // The chat runs on the folder as `vchat chat` would load it: proof that it round-trips.
            using var loaded = VisualChatModel.Load(modelFolder);
            loaded.eval();
            log.WriteLine($"  saved {modelFolder}; scripted chat on the reloaded model (greedy):");
            var rounds = DemoModel.PlayChat(loaded, DemoModel.ScriptFor(recipe.Seed + 4), recipe.ImageSize, Path.Combine(outputFolder, "chat"));
            for (int r = 0; r < rounds.Count; r++)
            {
                if (rounds[r].Images.Count > 0) log.WriteLine($"  round {r + 1} images: {string.Join(", ", rounds[r].Images)}");
                log.WriteLine($"  round {r + 1} user:  {rounds[r].Question}");
                log.WriteLine($"  round {r + 1} model: {rounds[r].Answer}   (expected: {rounds[r].Expected}{(rounds[r].Correct ? ", correct" : ", WRONG")})");
            }
            return rounds;
        });
        var result = new DemoResult(visual.PerKind, visual.Overall, described.PerKind, described.Overall, vision, timings, tokenizer.VocabSize,
            modelFolder, chat);
        log.WriteLine($"total: {result.TotalWallSeconds:F1} s wall, {result.TotalCpuSeconds:F1} s CPU");
        ((nn.Module)projection).Dispose();
        lm.Dispose();
        encoder.Dispose();
        return result;
    }

    /// <summary>Scores the VisualChat model (images → encoder → projection) on held-out rounds.</summary>
    public static DemoScores EvaluateVisual(DemoRecipe recipe, LlamaForCausalLM lm, IVisionEncoder encoder, IProjection projection,
        IReadOnlyList<DemoSample> samples) =>
        Score(samples, (lm, batch) => VisualChatTraining.Project(projection, VisualChatTraining.EncodeImages(encoder, batch.Scenes, recipe.ImageSize)), lm);

    /// <summary>Scores the LM reading the true descriptions in the image slots: the ceiling the projection can reach
    /// with this LM. Measured right after LM pretraining, before the DSVC stage moves the token embeddings.</summary>
    public static DemoScores EvaluateDescribed(DemoRecipe recipe, LlamaForCausalLM lm, SentencePieceTokenizer tokenizer, IReadOnlyList<DemoSample> samples)
    {
        var words = DescriptionVocabulary.From(tokenizer, recipe.DescribeWithAnswerTokens);
        return Score(samples, (lm, batch) => DemoChatForward.DescriptionEmbeddings(lm, batch.Scenes, words, recipe.ImageTokens), lm);
    }

    static DemoScores Score(IReadOnlyList<DemoSample> samples, Func<LlamaForCausalLM, DemoBatch, Tensor> imageEmbeddings, LlamaForCausalLM lm)
    {
        var scores = new DemoScores();
        using var noGrad = no_grad();
        for (int first = 0; first < samples.Count; first += 32)
        {
            using var scope = NewDisposeScope();
            using var batch = DemoSamples.Collate(samples.Skip(first).Take(32).ToArray());
            DemoChatForward.Score(DemoChatForward.Logits(lm, batch, imageEmbeddings(lm, batch)), batch, scores);
        }
        return scores;
    }
}
