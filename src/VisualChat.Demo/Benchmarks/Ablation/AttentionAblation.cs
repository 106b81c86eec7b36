using System.Diagnostics;
using TorchSharp;
using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Data.Synthetic;
using VisualChat.Demo;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks.Ablation;

/// <summary>
/// <c>vchat bench ablation</c>: the attention ablation DeepSpeed-VisualChat did not run. Per seed one frozen tiny CLIP
/// encoder and one text-only tiny LLaMA (<see cref="DescribedTextPretraining"/>) are pretrained; then every attention
/// mode gets a copy of the same LM and encoder, the same projection initialisation, the same conversations in the same
/// order, the same steps and optimiser, and is trained through <see cref="VisualChatModel.forward"/> — so the mode's own
/// attention path is what differs. Eval loss on held-out conversations is tracked during training; exact match per
/// question kind is measured at the end.
/// </summary>
public static class AttentionAblation
{
    const int EvalBatch = 32;
    const int TokenizerCorpusSeed = 1;

    /// <param name="workFolder">Where each seed's data (JSONL + PNGs), each mode's model folders, training runs
    /// (checkpoints, metrics.jsonl, loss.png) and the pretraining metrics go.</param>
    public static AblationResult Run(AblationSettings settings, TextWriter log, string workFolder)
    {
        settings.Validated();
        var clock = Stopwatch.StartNew();
        string machine = MachineInfo.Current().ToString();
        var seeds = Enumerable.Range(1, settings.Seeds).ToArray();
        var recipes = seeds.Select(settings.RecipeFor).ToArray();
        var template = new ConversationTemplate(new ConversationTemplateOptions { SystemPrompt = settings.Recipe.SystemPrompt });

        var corpusGenerator = new ShapesConversationGenerator(TokenizerCorpusSeed);
        var tokenizer = DemoTokenizer.Build(
            Enumerable.Range(0, 2000).Select(i => template.RenderText(DemoSamples.ToConversation(corpusGenerator.Generate(i)))), settings.Recipe.BpeMerges);
        int imageId = ConversationTemplate.ImageTokenId(tokenizer);
        if (imageId != tokenizer.VocabSize - 1)
            throw new InvalidOperationException($"The ablation tokenizer's '{ConversationTemplate.ImagePlaceholder}' is id {imageId}; it must be the last id ({tokenizer.VocabSize - 1}).");
        log.WriteLine($"tokenizer: {tokenizer.VocabSize} ids; seeds {string.Join(", ", seeds)}; {settings.Workers} worker(s)");
        string SeedFolder(int s) => Path.Combine(workFolder, $"seed-{seeds[s]}");

        // Stage 1 and 2: initialisation draws from libtorch's global generator, so every module is created here, in
        // order, before any training thread starts.
        var untrainedVision = recipes.Select(VisionPretraining.Create).ToArray();
        var lms = recipes.Select(r => LanguagePretraining.Create(r, imageId)).ToArray();
        var encoders = new ClipVisionModel[seeds.Length];
        var pretraining = new AblationPretraining[seeds.Length];
        var visionReports = new (VisionReport Report, double Seconds)[seeds.Length];
        var lmLosses = new (float Loss, double Seconds)[seeds.Length];
        var pretrainJobs = new List<Job>();
        for (int i = 0; i < seeds.Length; i++)
        {
            int s = i;
            pretrainJobs.Add(new Job($"seed {seeds[s]} vision pretraining", w =>
            {
                var timer = Stopwatch.StartNew();
                var (encoder, report) = VisionPretraining.Train(recipes[s], untrainedVision[s], Path.Combine(SeedFolder(s), "pretraining", "vision"), w);
                encoders[s] = encoder;
                visionReports[s] = (report, timer.Elapsed.TotalSeconds);
            }));
            pretrainJobs.Add(new Job($"seed {seeds[s]} LM pretraining (described images as text, causal)", w =>
            {
                var timer = Stopwatch.StartNew();
                float loss = DescribedTextPretraining.Train(recipes[s], lms[s], tokenizer, template, Path.Combine(SeedFolder(s), "pretraining", "lm"), w);
                lmLosses[s] = (loss, timer.Elapsed.TotalSeconds);
            }));
        }
        RunJobs(pretrainJobs, settings.Workers, log);
        for (int i = 0; i < seeds.Length; i++)
            pretraining[i] = new AblationPretraining(seeds[i], visionReports[i].Report, lmLosses[i].Loss, visionReports[i].Seconds, lmLosses[i].Seconds);

        // Stage 3: the same data (JSONL on disk), order and initialisation for every mode of a seed; each mode trains
        // through the product path (DemoChatTraining: model folder, data config, TrainingRunFactory, trainer, export).
        var models = new List<(int SeedIndex, AttentionMode Mode, VisualChatModel Model)>();
        var trainFiles = new string[seeds.Length];
        var evalSets = new IReadOnlyList<Conversation>[seeds.Length];
        try
        {
            for (int i = 0; i < seeds.Length; i++)
            {
                var recipe = recipes[i];
                int supersample = DemoImages.CanvasSize / recipe.ImageSize;
                var dataFolder = Path.Combine(SeedFolder(i), "data");
                trainFiles[i] = new ShapesConversationGenerator(recipe.Seed + 2)
                    .WriteJsonl(dataFolder, "shapes-train.jsonl", 0, recipe.ChatConversations, recipe.ImageSize, supersample);
                var evalFile = new ShapesConversationGenerator(recipe.Seed + 3)
                    .WriteJsonl(dataFolder, "shapes-eval.jsonl", 0, recipe.EvalConversations, recipe.ImageSize, supersample);
                evalSets[i] = DemoChatTraining.ReadJsonl(evalFile);
                foreach (var mode in settings.Modes)
                    models.Add((i, mode, BuildModel(recipe, mode, lms[i], encoders[i], tokenizer)));
            }
            var runs = new AblationRun[models.Count];
            var modeJobs = models.Select((m, j) => new Job($"seed {seeds[m.SeedIndex]} {VisualChatConfig.AttentionModeToName(m.Mode)}", w =>
                runs[j] = TrainMode(recipes[m.SeedIndex], seeds[m.SeedIndex], m.Mode, m.Model, trainFiles[m.SeedIndex], evalSets[m.SeedIndex],
                    settings.EvalEvery, Path.Combine(SeedFolder(m.SeedIndex), VisualChatConfig.AttentionModeToName(m.Mode).Replace('+', '-')), w))).ToList();
            RunJobs(modeJobs, settings.Workers, log);
            return new AblationResult(settings, machine, pretraining, runs, clock.Elapsed.TotalSeconds);
        }
        finally
        {
            // Each model owns its copies of the LM and encoder; the pretrained originals are disposed separately.
            foreach (var (_, _, model) in models) model.Dispose();
            foreach (var lm in lms) lm.Dispose();
            foreach (var encoder in encoders) encoder?.Dispose();
        }
    }

    /// <summary>A VisualChatModel for <paramref name="mode"/> around copies of the pretrained LM and encoder, with a
    /// perceiver projection of the recipe's image tokens (<see cref="DemoModel.Config"/>) initialised from the recipe's seed — the same
    /// projection for every mode, since the model draws it right after seeding the generator.</summary>
    public static VisualChatModel BuildModel(DemoRecipe recipe, AttentionMode mode, LlamaForCausalLM pretrainedLm, ClipVisionModel encoder,
        SentencePieceTokenizer tokenizer)
    {
        int imageId = ConversationTemplate.ImageTokenId(tokenizer);
        var lm = new LlamaForCausalLM(pretrainedLm.Config, seed: null, initialize: false);
        var vision = new ClipVisionModel(encoder.Config);
        CopyWeights(pretrainedLm, lm);
        CopyWeights(encoder, vision);
        var config = DemoModel.Config(recipe, mode, imageId, encoder.Config);
        return new VisualChatModel(config, lm, vision, seed: recipe.Seed + 42) { Tokenizer = tokenizer, ImageProcessor = DemoModel.ImageProcessor(recipe) };
    }

    static void CopyWeights(nn.Module source, nn.Module target)
    {
        using var noGrad = no_grad();
        var weights = source.state_dict();
        foreach (var (name, tensor) in target.state_dict())
        {
            if (!weights.TryGetValue(name, out var from))
                throw new InvalidOperationException($"Copying {source.GetName()} into a fresh copy: the source has no tensor '{name}'.");
            tensor.copy_(from);
        }
    }

    /// <summary>Trains one mode (its default trainable set: projection, token embeddings, cross-attention) through the
    /// product path with the recipe's DSVC settings, recording the trainer's eval loss (held-out split of the training
    /// data) every <paramref name="evalEvery"/> steps, then measures held-out exact match on the exported model folder.</summary>
    public static AblationRun TrainMode(DemoRecipe recipe, int seed, AttentionMode mode, VisualChatModel model, string trainJsonl,
        IReadOnlyList<Conversation> evalSet, int evalEvery, string folder, TextWriter log)
    {
        var clock = Stopwatch.StartNew();
        string name = VisualChatConfig.AttentionModeToName(mode);
        long trainable = model.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        var curve = new List<EvalLossPoint>();
        var modelFolder = Path.Combine(folder, "model");
        var outcome = DemoChatTraining.Run(recipe, model, trainJsonl, recipe.ChatConversations, folder, modelFolder, TextWriter.Null,
            configure: c => c.EvalEverySteps = evalEvery,
            progress: m =>
            {
                if (m.Kind != "eval" || m.EvalLoss is not { } loss || (m.Step % evalEvery != 0) || curve.Any(p => p.Step == m.Step)) return;
                curve.Add(new EvalLossPoint((int)m.Step, loss));
                log.WriteLine($"  seed {seed} {name,-12} step {m.Step,4}: eval loss {loss:F4} ({clock.Elapsed.TotalSeconds:F0} s)");
            });
        DemoScores scores;
        using (var trained = VisualChatModel.Load(modelFolder))
        {
            trained.eval();
            scores = DemoEvaluation.ExactMatch(trained, evalSet);
        }
        log.WriteLine($"  seed {seed} {name,-12} held-out exact match: {scores}");
        return new AblationRun(mode, seed, curve, scores.PerKind, scores.Totals, scores.Overall, outcome.Summary.LastLoss ?? double.NaN, trainable,
            clock.Elapsed.TotalSeconds);
    }

    sealed record Job(string Name, Action<TextWriter> Work);

    /// <summary>Runs independent jobs on up to <paramref name="workers"/> threads; each job's log is printed when it
    /// ends, so lines of concurrent jobs do not interleave. The first failure is rethrown after all threads stop.</summary>
    static void RunJobs(IReadOnlyList<Job> jobs, int workers, TextWriter log)
    {
        int next = -1;
        Exception? failure = null;
        var gate = new object();
        void Worker()
        {
            while (true)
            {
                int i = Interlocked.Increment(ref next);
                if (i >= jobs.Count || Volatile.Read(ref failure) is not null) return;
                lock (gate) { log.WriteLine($"[{jobs[i].Name}] started"); log.Flush(); }
                var buffer = new StringWriter();
                var clock = Stopwatch.StartNew();
                try { jobs[i].Work(buffer); }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, new InvalidOperationException($"Ablation job '{jobs[i].Name}' failed: {e.Message}", e), null);
                    buffer.WriteLine($"[{jobs[i].Name}] FAILED: {e}");
                }
                lock (gate)
                {
                    log.Write(buffer.ToString());
                    log.WriteLine($"[{jobs[i].Name}] done in {clock.Elapsed.TotalSeconds:F1} s");
                    log.Flush();
                }
            }
        }
        var threads = Enumerable.Range(0, Math.Min(workers, jobs.Count)).Select(_ => new Thread(Worker, 16 << 20) { IsBackground = true }).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (failure is not null) throw failure;
    }
}
