using System.Text.Json.Nodes;
using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Model;
using VisualChat.Training;

namespace VisualChat.Demo;

/// <summary>
/// The demo's DeepSpeed-VisualChat stage, run exactly as <c>vchat train</c> runs a <c>visualchat</c> config: the
/// assembled base model is saved as a model folder, a data config points at the training JSONL, and
/// <see cref="TrainingRunFactory"/> builds the model, readers, collator/prefetcher and <see cref="Trainer{TBatch}"/>
/// from a <see cref="TrainingConfig"/> (written next to the run as <c>train.json</c>, so
/// <c>vchat train --config DIR/train.json</c> repeats it). The final checkpoint is exported to a model folder.
/// </summary>
public static class DemoChatTraining
{
    /// <summary>Files of one DSVC run.</summary>
    public sealed record Outcome(string ModelFolder, string RunDir, TrainingSummary Summary);

    /// <summary>The data config of the training JSONL (one <c>jsonl</c> data set; the template's system prompt is the
    /// model's own).</summary>
    public static string WriteDataConfig(DemoRecipe recipe, string trainJsonl, string path)
    {
        var config = new JsonObject
        {
            ["root"] = Path.GetFullPath(Path.GetDirectoryName(trainJsonl)!),
            ["seed"] = recipe.Seed,
            ["max_seq_len"] = 1024,
            ["image_tokens"] = recipe.ImageTokens,
            ["eval_fraction"] = recipe.ChatEvalFraction,
            ["datasets"] = new JsonArray(new JsonObject { ["name"] = "shapes", ["format"] = "jsonl", ["path"] = Path.GetFileName(trainJsonl) }),
        };
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        return path;
    }

    /// <summary>The training config of the stage: the model's default trainable set (projection + token embeddings)
    /// plus LoRA adapters on the LM layers the recipe names (<see cref="DemoRecipe.ChatLoraDim"/>; merged on export),
    /// AdamW with the recipe's betas, warm-up + cosine, <see cref="DemoRecipe.ChatSteps"/> steps of
    /// <see cref="DemoRecipe.ChatBatch"/> conversations (as many epochs as that takes), the frozen encoder's features
    /// cached, a final checkpoint only.</summary>
    public static TrainingConfig Config(DemoRecipe recipe, string baseModel, string dataConfig, string runDir, int trainConversations) => new()
    {
        Model = new ModelSection { Kind = "visualchat", Path = Path.GetFullPath(baseModel) },
        DataConfig = Path.GetFullPath(dataConfig),
        OutputDir = Path.GetFullPath(runDir),
        LearningRate = recipe.ChatLearningRate, WeightDecay = recipe.WeightDecay,
        AdamBeta1 = recipe.ChatBeta1, AdamBeta2 = recipe.ChatBeta2,
        PerDeviceTrainBatchSize = recipe.ChatBatch, PerDeviceEvalBatchSize = 32,
        MaxSteps = recipe.ChatSteps,
        NumTrainEpochs = (int)Math.Ceiling((double)recipe.ChatSteps * recipe.ChatBatch / Math.Max(1, trainConversations * (1 - recipe.ChatEvalFraction) - recipe.ChatBatch)) + 1,
        LrSchedulerType = "cosine", NumWarmupSteps = recipe.WarmupSteps, MaxGradNorm = 1.0,
        Seed = recipe.Seed, Precision = "fp32", SaveEveryEpochs = 0, SaveFinal = true, LogEverySteps = 100,
        VisionFeatureCacheMb = 1024,
        LoraDim = recipe.ChatLoraDim,
        LoraModuleName = recipe.ChatLoraDim > 0 ? [.. recipe.ChatLoraModules] : [],
    };

    /// <summary>Saves <paramref name="baseModel"/> to <c>{folder}/base-model</c>, trains through the product path into
    /// <c>{folder}/run</c> (checkpoints, metrics.jsonl, loss.png) and exports the final checkpoint to
    /// <paramref name="modelFolder"/>.</summary>
    /// <param name="configure">Changes to the training config before the run (e.g. eval_every_steps).</param>
    /// <param name="progress">Also receives every step's and evaluation's metrics.</param>
    public static Outcome Run(DemoRecipe recipe, VisualChatModel baseModel, string trainJsonl, int trainConversations, string folder,
        string modelFolder, TextWriter log, Action<TrainingConfig>? configure = null, Action<StepMetrics>? progress = null)
    {
        var basePath = Path.Combine(folder, "base-model");
        baseModel.Save(basePath);
        var dataConfig = WriteDataConfig(recipe, trainJsonl, Path.Combine(folder, "data.json"));
        var config = Config(recipe, basePath, dataConfig, Path.Combine(folder, "run"), trainConversations);
        configure?.Invoke(config);
        config.Validate();
        var configPath = Path.Combine(folder, "train.json");
        File.WriteAllText(configPath, config.ToJson());
        log.WriteLine($"  vchat train --config {configPath}");

        using var run = TrainingRunFactory.Create(config, message => log.WriteLine($"  {message}"));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        run.Trainer.Progress = m =>
        {
            progress?.Invoke(m);
            if (m.Kind == "eval") log.WriteLine($"  eval loss {m.EvalLoss:F4} at step {m.Step} ({clock.Elapsed.TotalSeconds:F0} s)");
            else if (m.Step % config.LogEverySteps == 1 || m.Step == m.TotalSteps)
                log.WriteLine($"  chat step {m.Step,5}/{m.TotalSteps}: loss {m.Loss:F4}, lr {m.LearningRate:E2} ({clock.Elapsed.TotalSeconds:F0} s)");
        };
        run.Trainer.Log = message => log.WriteLine($"  {message}");
        var summary = run.Run();
        var final = summary.Checkpoints.LastOrDefault(c => Path.GetFileName(c) == "final")
            ?? throw new InvalidOperationException($"The DSVC run in {summary.RunDir} wrote no final checkpoint ({summary}).");
        CheckpointExport.Export(final, modelFolder, message => log.WriteLine($"  {message}"));
        return new Outcome(modelFolder, summary.RunDir, summary);
    }

    /// <summary>The conversations of a JSONL file in our format, read by the project's reader (the round's
    /// <c>type</c> becomes <see cref="Round.Category"/>).</summary>
    public static IReadOnlyList<Conversation> ReadJsonl(string path)
    {
        var context = new ReadContext
        {
            DataSetName = Path.GetFileNameWithoutExtension(path), Root = Path.GetDirectoryName(Path.GetFullPath(path))!,
            Path = Path.GetFullPath(path), Report = new DataSetReport(Path.GetFileName(path)),
        };
        var conversations = new JsonlReader().Read(context).ToList();
        if (context.Report.SkippedTotal > 0)
            throw new InvalidDataException($"{path}: {context.Report.SkippedTotal} records could not be read; see the data report.");
        return conversations;
    }
}
