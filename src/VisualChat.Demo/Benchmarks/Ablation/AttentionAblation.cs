using System.Diagnostics;
using TorchSharp;
using VisualChat.Data.Synthetic;
using VisualChat.Demo;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using static TorchSharp.torch;
using VisualChat.Conversations;

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

    public static AblationResult Run(AblationSettings settings, TextWriter log)
    {
        settings.Validated();
        // No background GC while this runs: a concurrent collection can scan a thread that is inside a libtorch call
        // whose implicit TorchSharp Scalar is already dead to the JIT, and the finalizer then frees it mid-call
        // ("Unknown scalar type"; seen in ClipAttention even with one worker). Blocking collections only happen at an
        // allocation of a training thread, where no such call is in flight — with one worker.
        var latency = System.Runtime.GCSettings.LatencyMode;
        System.Runtime.GCSettings.LatencyMode = System.Runtime.GCLatencyMode.Batch;
        try { return RunBlockingGc(settings, log); }
        finally { System.Runtime.GCSettings.LatencyMode = latency; }
    }

    static AblationResult RunBlockingGc(AblationSettings settings, TextWriter log)
    {
        // One intra-op thread per job: the matrices are tiny, and the jobs themselves run side by side.
        torch.set_num_threads(1);
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
                var (encoder, report) = VisionPretraining.Train(recipes[s], untrainedVision[s], w);
                encoders[s] = encoder;
                visionReports[s] = (report, timer.Elapsed.TotalSeconds);
            }));
            pretrainJobs.Add(new Job($"seed {seeds[s]} LM pretraining (described images as text, causal)", w =>
            {
                var timer = Stopwatch.StartNew();
                float loss = DescribedTextPretraining.Train(recipes[s], lms[s], tokenizer, template, w);
                lmLosses[s] = (loss, timer.Elapsed.TotalSeconds);
            }));
        }
        RunJobs(pretrainJobs, settings.Workers, log);
        for (int i = 0; i < seeds.Length; i++)
            pretraining[i] = new AblationPretraining(seeds[i], visionReports[i].Report, lmLosses[i].Loss, visionReports[i].Seconds, lmLosses[i].Seconds);

        // Stage 3: the same data, order and initialisation for every mode of a seed.
        var models = new List<(int SeedIndex, AttentionMode Mode, VisualChatModel Model)>();
        var pools = new DemoSample[seeds.Length][];
        var evalSets = new DemoSample[seeds.Length][];
        var scoringSets = new DemoSample[seeds.Length][];
        var orders = new int[seeds.Length][][];
        try
        {
            for (int i = 0; i < seeds.Length; i++)
            {
                var recipe = recipes[i];
                var poolGenerator = new ShapesConversationGenerator(recipe.Seed + 2);
                var evalGenerator = new ShapesConversationGenerator(recipe.Seed + 3);
                pools[i] = Enumerable.Range(0, recipe.ChatConversations).Select(k => DemoSamples.Encode(poolGenerator.Generate(k), template, tokenizer)).ToArray();
                var evalConversations = Enumerable.Range(0, recipe.EvalConversations).Select(evalGenerator.Generate).ToArray();
                evalSets[i] = evalConversations.Select(c => DemoSamples.Encode(c, template, tokenizer)).ToArray();
                // The model expands each placeholder to its image tokens; the scorer reads answer positions after that expansion.
                scoringSets[i] = evalConversations.Select(c => DemoSamples.Encode(c, template, tokenizer, recipe.ImageTokens)).ToArray();
                var order = new Random(recipe.Seed + 32);
                orders[i] = Enumerable.Range(0, recipe.ChatSteps)
                    .Select(_ => Enumerable.Range(0, recipe.ChatBatch).Select(_ => order.Next(recipe.ChatConversations)).ToArray()).ToArray();
                foreach (var mode in settings.Modes)
                    models.Add((i, mode, BuildModel(recipe, mode, lms[i], encoders[i], imageId)));
            }
            var evalSteps = settings.EvalSteps();
            var runs = new AblationRun[models.Count];
            var modeJobs = models.Select((m, j) => new Job($"seed {seeds[m.SeedIndex]} {VisualChatConfig.AttentionModeToName(m.Mode)}", w =>
                runs[j] = TrainMode(recipes[m.SeedIndex], seeds[m.SeedIndex], m.Mode, m.Model, pools[m.SeedIndex], evalSets[m.SeedIndex], scoringSets[m.SeedIndex],
                    orders[m.SeedIndex], evalSteps, w))).ToList();
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
    public static VisualChatModel BuildModel(DemoRecipe recipe, AttentionMode mode, LlamaForCausalLM pretrainedLm, ClipVisionModel encoder, int imageId)
    {
        var lm = new LlamaForCausalLM(pretrainedLm.Config, seed: null, initialize: false);
        var vision = new ClipVisionModel(encoder.Config);
        CopyWeights(pretrainedLm, lm);
        CopyWeights(encoder, vision);
        var config = DemoModel.Config(recipe, mode, imageId, encoder.Config);
        return new VisualChatModel(config, lm, vision, seed: recipe.Seed + 42);
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

    /// <summary>Trains one mode (its default trainable set: projection, token embeddings, cross-attention) with AdamW and
    /// the demo's schedule, measuring held-out eval loss at <paramref name="evalSteps"/> and exact match at the end.</summary>
    public static AblationRun TrainMode(DemoRecipe recipe, int seed, AttentionMode mode, VisualChatModel model, IReadOnlyList<DemoSample> pool,
        IReadOnlyList<DemoSample> evalSet, IReadOnlyList<DemoSample> scoringSet, int[][] order, IReadOnlyList<int> evalSteps, TextWriter log)
    {
        var clock = Stopwatch.StartNew();
        string name = VisualChatConfig.AttentionModeToName(mode);
        // Every image goes through the frozen encoder once; later steps and evaluations reuse its features.
        using var cache = new VisionFeatureCache(1L << 30);
        model.FeatureCache = cache;
        var parameters = model.parameters().Where(p => p.requires_grad).ToList();
        long trainable = parameters.Sum(p => p.numel());
        using var optimization = new DemoOptimization(parameters, recipe.ChatLearningRate, recipe.ChatSteps, recipe.WarmupSteps,
            recipe.ChatBeta1, recipe.ChatBeta2, recipe.WeightDecay);
        var curve = new List<EvalLossPoint>();
        var scores = new DemoScores();
        void Measure(int step)
        {
            model.eval();
            bool last = step == recipe.ChatSteps;
            double loss = Evaluate(model, evalSet, recipe.ImageSize, last ? scores : null, scoringSet);
            curve.Add(new EvalLossPoint(step, loss));
            log.WriteLine($"  seed {seed} {name,-12} step {step,4}: eval loss {loss:F4} ({clock.Elapsed.TotalSeconds:F0} s)");
        }

        if (evalSteps.Contains(0)) Measure(0);
        float trainLoss = float.NaN;
        for (int step = 0; step < recipe.ChatSteps; step++)
        {
            model.train();
            using (var scope = NewDisposeScope())
            {
                var picked = order[step];
                var samples = picked.Select(i => pool[i]).ToArray();
                using var batch = DemoSamples.Collate(samples);
                var output = model.forward(ToVisualChatBatch(batch, picked.Select(i => $"train/{i}").ToArray(), recipe.ImageSize));
                trainLoss = optimization.Step(step, output.Loss!);
            }
            if (evalSteps.Contains(step + 1)) Measure(step + 1);
        }
        if (curve.Count == 0 || curve[^1].Step != recipe.ChatSteps) Measure(recipe.ChatSteps);
        model.FeatureCache = null;
        log.WriteLine($"  seed {seed} {name,-12} held-out exact match: {scores}");
        return new AblationRun(mode, seed, curve, scores.PerKind, scores.Totals, scores.Overall, trainLoss, trainable, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Answer-token cross entropy over the whole held-out set (each answer token weighs the same); scores exact
    /// match per question kind into <paramref name="scores"/> when given.</summary>
    /// <param name="scoringSamples">The same conversations encoded with the model's image tokens per placeholder (answer
    /// positions after expansion); null when the model uses one token per image.</param>
    public static double Evaluate(VisualChatModel model, IReadOnlyList<DemoSample> samples, int imageSize, DemoScores? scores,
        IReadOnlyList<DemoSample>? scoringSamples = null)
    {
        using var noGrad = no_grad();
        double sum = 0;
        long tokens = 0;
        for (int first = 0; first < samples.Count; first += EvalBatch)
        {
            using var scope = NewDisposeScope();
            var chunk = samples.Skip(first).Take(EvalBatch).ToArray();
            using var batch = DemoSamples.Collate(chunk);
            var output = model.forward(ToVisualChatBatch(batch, chunk.Select((_, b) => $"eval/{first + b}").ToArray(), imageSize));
            sum += (double)output.Loss!.item<float>() * output.AnswerTokens;
            tokens += output.AnswerTokens;
            if (scores is not null)
            {
                using var expanded = DemoSamples.Collate((scoringSamples ?? samples).Skip(first).Take(EvalBatch).ToArray());
                DemoChatForward.Score(output.Logits, expanded, scores);
            }
        }
        return sum / Math.Max(1, tokens);
    }

    /// <summary>The demo batch as the model's input: attention mask over each sample's tokens, pixels of its images in
    /// placeholder order, and one cache key per image (<paramref name="sampleKeys"/>[b] + "/" + image number).</summary>
    static VisualChatBatch ToVisualChatBatch(DemoBatch batch, IReadOnlyList<string> sampleKeys, int imageSize)
    {
        long length = batch.InputIds.shape[1];
        var mask = new long[batch.Samples.Length * length];
        var keys = new List<string>();
        for (int b = 0; b < batch.Samples.Length; b++)
        {
            Array.Fill(mask, 1L, (int)(b * length), batch.Samples[b].InputIds.Length);
            for (int j = 0; j < batch.Samples[b].Scenes.Length; j++) keys.Add($"{sampleKeys[b]}/{j}");
        }
        return new VisualChatBatch(batch.InputIds, batch.Labels, tensor(mask, [batch.Samples.Length, length]),
            batch.Samples.Select(s => s.Scenes.Length).ToArray(), DemoImages.ToPixels(batch.Scenes, imageSize), keys);
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
            torch.set_num_threads(1);
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
