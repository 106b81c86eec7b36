using System.Diagnostics;
using TorchSharp;
using VisualChat.Attention;
using VisualChat.Conversations;
using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>Wall-clock and process CPU seconds of one stage.</summary>
public sealed record StageTiming(string Stage, double WallSeconds, double CpuSeconds);

/// <summary>What <see cref="DemoPipeline.Run"/> measured: held-out exact match of the saved model folder under greedy
/// decoding, per question kind.</summary>
public sealed record DemoResult(
    IReadOnlyDictionary<ShapesQuestion, double> AccuracyPerKind,
    double Accuracy,
    IReadOnlyDictionary<ShapesQuestion, int> RoundsPerKind,
    VisionReport Vision,
    IReadOnlyList<StageTiming> Timings,
    int VocabSize,
    string ModelFolder,
    string RunDir,
    IReadOnlyList<DemoChatRound> Chat)
{
    public double TotalWallSeconds => Timings.Sum(t => t.WallSeconds);
    public double TotalCpuSeconds => Timings.Sum(t => t.CpuSeconds);
}

/// <summary>
/// <c>vchat demo</c>: data generation (written as JSONL + PNGs) → vision pretraining ‖ LM pretraining →
/// DeepSpeed-VisualChat training through the product (<see cref="DemoChatTraining"/>: model folder, data config,
/// <see cref="Training.TrainingRunFactory"/>, trainer, export) → held-out exact match of the exported model folder
/// (<see cref="DemoEvaluation"/>) and a scripted chat on it, all seeded from <see cref="DemoRecipe.Seed"/>.
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

        string trainJsonl = Path.Combine(outputFolder, "data", "shapes-train.jsonl");
        string evalJsonl = Path.Combine(outputFolder, "eval", "shapes-eval.jsonl");
        var tokenizer = Stage("data", () =>
        {
            var corpusGenerator = new ShapesConversationGenerator(recipe.Seed + 1);
            var corpus = Enumerable.Range(0, 2000).Select(i => template.RenderText(DemoSamples.ToConversation(corpusGenerator.Generate(i))));
            var tokenizer = DemoTokenizer.Build(corpus, recipe.BpeMerges);
            tokenizer.Save(Path.Combine(outputFolder, "tokenizer"));
            // The images at the encoder's size, box-filtered from the 64-px canvas exactly as the encoder's pretraining pixels.
            int supersample = DemoImages.CanvasSize / recipe.ImageSize;
            chatGenerator.WriteJsonl(Path.GetDirectoryName(trainJsonl)!, Path.GetFileName(trainJsonl), 0, recipe.ChatConversations, recipe.ImageSize, supersample);
            evalGenerator.WriteJsonl(Path.GetDirectoryName(evalJsonl)!, Path.GetFileName(evalJsonl), 0, recipe.EvalConversations, recipe.ImageSize, supersample);
            log.WriteLine($"  vocab {tokenizer.VocabSize}; {recipe.ChatConversations} training conversations in {trainJsonl}, {recipe.EvalConversations} held-out in {evalJsonl}");
            return tokenizer;
        });

        var kernel = MmcaAttentionKernel.Instance;
        var untrainedVision = VisionPretraining.Create(recipe);
        string visionRun = Path.Combine(outputFolder, "pretraining", "vision"), lmRun = Path.Combine(outputFolder, "pretraining", "lm");
        var untrainedLm = LanguagePretraining.Create(recipe, tokenizer.VocabSize);
        var cache = cacheFolder is null ? null : new DemoStageCache(cacheFolder);
        (ClipVisionModel Encoder, VisionReport Report) PretrainVision(TextWriter stageLog)
        {
            if (cache is null) return VisionPretraining.Train(recipe, untrainedVision, visionRun, stageLog);
            var key = DemoStageCache.Key("vision", recipe.Seed, recipe.ImageSize, recipe.PatchSize, recipe.VisionWidth, recipe.VisionLayers,
                recipe.VisionHeads, recipe.VisionSteps, recipe.VisionBatch, recipe.VisionLearningRate, recipe.WarmupSteps, recipe.WeightDecay);
            var (report, cached) = cache.GetOrTrain(key, untrainedVision.encoder, () => VisionPretraining.Train(recipe, untrainedVision, visionRun, stageLog).Report, stageLog);
            if (cached)
            {
                untrainedVision.encoder.Freeze();
                untrainedVision.kind.Dispose(); untrainedVision.colour.Dispose(); untrainedVision.count.Dispose();
            }
            return (untrainedVision.encoder, report);
        }
        LlamaForCausalLM PretrainLm(TextWriter stageLog)
        {
            if (cache is null) return LanguagePretraining.Train(recipe, untrainedLm, tokenizer, template, kernel, lmRun, stageLog).Lm;
            var key = DemoStageCache.Key("lm", recipe.Seed, recipe.BpeMerges, recipe.SystemPrompt, recipe.DescribeWithAnswerTokens, recipe.ImageTokens, tokenizer.VocabSize,
                recipe.LmHidden, recipe.LmLayers, recipe.LmHeads, recipe.LmIntermediate, recipe.LmSteps, recipe.LmBatch, recipe.LmLearningRate,
                recipe.WarmupSteps, recipe.WeightDecay);
            var (_, cached) = cache.GetOrTrain(key, untrainedLm, () => LanguagePretraining.Train(recipe, untrainedLm, tokenizer, template, kernel, lmRun, stageLog).FinalLoss, stageLog);
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
        string modelFolder = Path.Combine(outputFolder, "model");
        var outcome = Stage("visualchat training", () =>
        {
            // The base model takes the encoder; the pretrained LM is copied into it.
            using var baseModel = DemoModel.Assemble(recipe, lm, encoder, tokenizer);
            return DemoChatTraining.Run(recipe, baseModel, trainJsonl, recipe.ChatConversations, Path.Combine(outputFolder, "dsvc"), modelFolder, log);
        });
        lm.Dispose();

        // Everything from here runs on the exported folder as `vchat chat` would load it: proof that it round-trips.
        using var model = VisualChatModel.Load(modelFolder);
        model.eval();
        var scores = Stage("evaluation", () => DemoEvaluation.ExactMatch(model, DemoChatTraining.ReadJsonl(evalJsonl)));
        log.WriteLine($"  held-out exact match (greedy, saved model): {scores}");
        var chat = Stage("chat", () =>
        {
            log.WriteLine($"  scripted chat on {modelFolder} (greedy):");
            var rounds = DemoModel.PlayChat(model, DemoModel.ScriptFor(recipe.Seed + 4), recipe.ImageSize, Path.Combine(outputFolder, "chat"));
            for (int r = 0; r < rounds.Count; r++)
            {
                if (rounds[r].Images.Count > 0) log.WriteLine($"  round {r + 1} images: {string.Join(", ", rounds[r].Images)}");
                log.WriteLine($"  round {r + 1} user:  {rounds[r].Question}");
                log.WriteLine($"  round {r + 1} model: {rounds[r].Answer}   (expected: {rounds[r].Expected}{(rounds[r].Correct ? ", correct" : ", WRONG")})");
            }
            return rounds;
        });
        var result = new DemoResult(scores.PerKind, scores.Overall, scores.Totals, vision, timings, tokenizer.VocabSize, modelFolder, outcome.RunDir, chat);
        log.WriteLine($"total: {result.TotalWallSeconds:F1} s wall, {result.TotalCpuSeconds:F1} s CPU");
        return result;
    }
}
