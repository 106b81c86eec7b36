using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Training;
using static TorchSharp.torch;

namespace VisualChat.Tests.Training;

/// <summary>The DSVC recipe through <c>vchat train</c>'s factory on the tiny preset and generated shapes conversations.</summary>
public sealed class VisualChatTrainingTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("vc-train").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    TrainingConfig Config(string extra = "")
    {
        var modelFolder = Path.Combine(_dir, "model");
        if (!Directory.Exists(modelFolder))
        {
            using var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 3);
            model.Save(modelFolder);
            new ShapesConversationGenerator(2).WriteJsonl(Path.Combine(_dir, "data"), "train.jsonl", 0, 24);
            File.WriteAllText(Path.Combine(_dir, "data.json"),
                "{\"root\": \"data\", \"eval_fraction\": 0.2, \"datasets\": [{\"name\": \"shapes\", \"format\": \"jsonl\", \"path\": \"train.jsonl\"}]}");
        }
        var json = $$"""
            {"model": {"kind": "visualchat", "path": "{{modelFolder}}"}, "data_config": "{{Path.Combine(_dir, "data.json")}}",
             "output_dir": "{{Path.Combine(_dir, "run")}}", "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
             "max_steps": 3, "learning_rate": 0.01, "log_every_steps": 1 {{extra}}}
            """;
        return TrainingConfig.Parse(json);
    }

    [Fact]
    public void DefaultRecipeChangesOnlyProjectionAndEmbeddings_AndExportReproducesTheTrainedModel()
    {
        var config = Config();
        Dictionary<string, Tensor> before;
        using (var baseModel = VisualChatModel.Load(Path.Combine(_dir, "model")))
            before = baseModel.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

        using var run = TrainingRunFactory.Create(config);
        var summary = run.Run();
        Assert.Equal(3, summary.Steps);
        var trained = (VisualChatModel)((Trainer<VisualChatTrainingBatch>)run.Trainer).Model.Module;
        var after = trained.state_dict();
        var changed = after.Where(kv => !kv.Value.allclose(before[kv.Key], rtol: 0, atol: 0)).Select(kv => kv.Key).Order().ToList();
        Assert.Equal(new[] { "lm.model.embed_tokens.weight", "projection.0.bias", "projection.0.weight", "projection.1.bias", "projection.1.weight" }, changed);

        var exported = Path.Combine(_dir, "exported");
        CheckpointExport.Export(Path.Combine(_dir, "run", "final"), exported);
        using var reloaded = VisualChatModel.Load(exported);
        foreach (var (name, tensor) in reloaded.state_dict())
            Assert.True(tensor.allclose(after[name], rtol: 0, atol: 0), $"{name} differs after export");
    }

    [Fact]
    public void ResumedMultimodalRunEndsBitIdenticalToAnUninterruptedOne()
    {
        Dictionary<string, Tensor> State(TrainingRun run) =>
            ((Trainer<VisualChatTrainingBatch>)run.Trainer).Model.Module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        TrainingConfig RunConfig(string folder, bool resume)
        {
            var config = Config();
            config.MaxSteps = 4;
            config.OutputDir = Path.Combine(_dir, folder);
            if (resume) config.Resume = "auto";
            return config;
        }

        Dictionary<string, Tensor> straight;
        using (var run = TrainingRunFactory.Create(RunConfig("straight", resume: false)))
        {
            Assert.Equal(4, run.Run().Steps);
            straight = State(run);
        }
        using (var run = TrainingRunFactory.Create(RunConfig("resumed", resume: false)))
        using (var stop = new CancellationTokenSource())
        {
            run.Trainer.Progress = m => { if (m.Kind == "train" && m.Step == 2) stop.Cancel(); };
            var first = run.Run(stop.Token);
            Assert.True(first.Interrupted);
            Assert.Equal(2, first.Steps);
        }
        using (var run = TrainingRunFactory.Create(RunConfig("resumed", resume: true)))
        {
            var second = run.Run();
            Assert.False(second.Interrupted);
            Assert.Equal(4, second.Steps);
            // The resumed run must continue with batches 2 and 3 of the epoch's plan, not start it over.
            foreach (var (name, tensor) in State(run))
                Assert.True(TrainingTestKit.BitIdentical(straight[name], tensor), $"{name} differs between the resumed and the uninterrupted run");
        }
    }

    [Fact]
    public void GradientCheckpointingTrainsToTheSameWeights()
    {
        Dictionary<string, Tensor> Train(bool checkpointing, string run)
        {
            var config = Config($", \"gradient_checkpointing\": {(checkpointing ? "true" : "false")}");
            config.OutputDir = Path.Combine(_dir, run);
            using var training = TrainingRunFactory.Create(config);
            training.Run();
            var model = ((Trainer<VisualChatTrainingBatch>)training.Trainer).Model.Module;
            return model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        }
        var plain = Train(false, "plain");
        var checkpointed = Train(true, "checkpointed");
        foreach (var (name, tensor) in plain)
            Assert.True((tensor - checkpointed[name]).abs().max().item<float>() < 1e-5f, $"{name} differs with gradient checkpointing");
    }

    [Fact]
    public void UnreadableImageSkipsItsSampleWithFileAndRecord()
    {
        var config = Config();
        var images = Directory.GetFiles(Path.Combine(_dir, "data", "images")).Order().ToArray();
        File.WriteAllBytes(images[0], [0x89, (byte)'P', (byte)'N', (byte)'G', 1, 2, 3]);
        var messages = new List<string>();
        using var run = TrainingRunFactory.Create(config, messages.Add);
        run.Run();
        Assert.Contains(messages, m => m.Contains("skipped sample") && m.Contains("train.jsonl"));
    }
}

/// <summary>A LLaVA-1.5 folder (trained causal) fine-tuned with the DSVC recipe and MMCA: just <c>vchat train</c> on the
/// folder with <c>model.attention_mode: mmca</c>.</summary>
public sealed class LlavaFineTuningTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("vc-llava-ft").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("mmca", AttentionMode.Mmca)]
    [InlineData(null, AttentionMode.Causal)]
    public void LlavaFolderTrainsWithTheRequestedAttentionAndItsOwnTemplate(string? requested, AttentionMode expected)
    {
        string llava = Path.Combine(_dir, "llava");
        var llavaConfig = Multimodal.LlavaCheckpointTests.Config();
        Multimodal.LlavaCheckpointTests.WriteFolder(llava, llavaConfig, Multimodal.LlavaCheckpointTests.Weights(llavaConfig, LlavaKeyLayout.Legacy, seed: 21));
        new ShapesConversationGenerator(5).WriteJsonl(Path.Combine(_dir, "data"), "train.jsonl", 0, 16);
        File.WriteAllText(Path.Combine(_dir, "data.json"),
            "{\"root\": \"data\", \"eval_fraction\": 0.25, \"datasets\": [{\"name\": \"shapes\", \"format\": \"jsonl\", \"path\": \"train.jsonl\"}]}");
        string mode = requested is null ? "" : $", \"attention_mode\": \"{requested}\"";
        var config = TrainingConfig.Parse($$"""
            {"model": {"kind": "visualchat", "path": "{{llava}}"{{mode}}}, "data_config": "{{Path.Combine(_dir, "data.json")}}",
             "output_dir": "{{Path.Combine(_dir, "run")}}", "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
             "max_steps": 2, "learning_rate": 0.01, "log_every_steps": 1}
            """);
        var messages = new List<string>();
        using var run = TrainingRunFactory.Create(config, messages.Add);
        var trained = (VisualChatModel)((Trainer<VisualChatTrainingBatch>)run.Trainer).Model.Module;
        Assert.Equal(expected, trained.Config.AttentionMode);
        Assert.Equal(VisualChatConfig.LlavaTemplateName, trained.Config.PromptTemplate);
        Assert.Equal(requested is not null, messages.Any(m => m.Contains("attention_mode: causal (the folder's) → mmca")));
        Assert.Equal(2, run.Run().Steps);

        string exported = Path.Combine(_dir, "exported");
        CheckpointExport.Export(Path.Combine(_dir, "run", "final"), exported);
        using var reloaded = VisualChatModel.Load(exported);
        Assert.Equal(expected, reloaded.Config.AttentionMode);
        Assert.Equal(VisualChatConfig.LlavaTemplateName, reloaded.Config.PromptTemplate);
    }

    [Fact]
    public void CausalCrossCannotBeSwitchedOnALoadedModel()
    {
        string llava = Path.Combine(_dir, "llava");
        var llavaConfig = Multimodal.LlavaCheckpointTests.Config();
        Multimodal.LlavaCheckpointTests.WriteFolder(llava, llavaConfig, Multimodal.LlavaCheckpointTests.Weights(llavaConfig, LlavaKeyLayout.Legacy, seed: 22));
        var section = new ModelSection { Kind = "visualchat", Path = llava, AttentionMode = "causal+cross" };
        var error = Assert.Throws<TrainingConfigException>(() => TrainingRunFactory.LoadOrAssembleVisualChat(section, 0, null));
        Assert.Contains("model.attention_mode", error.Message);
        Assert.Contains("causal+cross", error.Message);
    }
}

public sealed class VisualChatLoraTrainingTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("vc-lora").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void LoraOnTheLanguageModelAndTheVisionEncoderTrainsOnlyAdaptersAndExportsWithOriginalNames()
    {
        var modelFolder = Path.Combine(_dir, "model");
        using (var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 3)) model.Save(modelFolder);
        new ShapesConversationGenerator(2).WriteJsonl(Path.Combine(_dir, "data"), "train.jsonl", 0, 12);
        File.WriteAllText(Path.Combine(_dir, "data.json"),
            "{\"root\": \"data\", \"eval_fraction\": 0, \"datasets\": [{\"name\": \"shapes\", \"format\": \"jsonl\", \"path\": \"train.jsonl\"}]}");
        var config = TrainingConfig.Parse($$"""
            {"model": {"kind": "visualchat", "path": "{{modelFolder}}"}, "data_config": "{{Path.Combine(_dir, "data.json")}}",
             "output_dir": "{{Path.Combine(_dir, "run")}}", "per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 0.05,
             "lora_dim": 2, "lora_module_name": ["lm.*q_proj", "vision.*q_proj"], "only_optimize_lora": true}
            """);
        using var baseModel = VisualChatModel.Load(modelFolder);
        var before = baseModel.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

        using var run = TrainingRunFactory.Create(config);
        run.Run();
        var trained = (VisualChatModel)((Trainer<VisualChatTrainingBatch>)run.Trainer).Model.Module;
        var names = run.Trainer.TrainableNames;
        Assert.All(names, n => Assert.Contains(".lora_", n));
        Assert.Contains(names, n => n.StartsWith("vision.", StringComparison.Ordinal));
        Assert.Contains(names, n => n.StartsWith("lm.", StringComparison.Ordinal));
        var state = trained.state_dict();
        Assert.Contains(state, kv => kv.Key.StartsWith("vision.") && kv.Key.EndsWith("lora_B") && kv.Value.abs().sum().item<float>() > 0);
        foreach (var (name, tensor) in state.Where(kv => kv.Key.Contains(".base_layer.")))
            Assert.True(tensor.allclose(before[name.Replace(".base_layer.", ".")], rtol: 0, atol: 0), $"{name} changed");

        var exported = Path.Combine(_dir, "exported");
        CheckpointExport.Export(Path.Combine(_dir, "run", "final"), exported);
        using var reloaded = VisualChatModel.Load(exported);
        Assert.Equal(before.Keys.Order(), reloaded.state_dict().Keys.Order());
        Assert.Contains(reloaded.state_dict(), kv => kv.Key.StartsWith("vision.") && kv.Key.EndsWith("q_proj.weight") && !kv.Value.allclose(before[kv.Key], rtol: 0, atol: 0));

        // The exported (merged) model computes what the trained (unmerged adapter) model computes, images included.
        using var noGrad = no_grad();
        trained.eval();
        reloaded.eval();
        int img = trained.Config.ImageTokenId;
        var ids = tensor(new long[] { 1, 40, img, 41, 42, 43 }, new long[] { 1, 6 });
        var pixels = stack(new[] { rand(new long[] { 3, 32, 32 }, generator: new Generator(5)) });
        var trainedLogits = trained.forward(new VisualChatBatch(ids, null, null, [1], pixels)).Logits;
        var exportedLogits = reloaded.forward(new VisualChatBatch(ids, null, null, [1], pixels)).Logits;
        var baseLogits = baseModel.forward(new VisualChatBatch(ids, null, null, [1], pixels)).Logits;
        float gap = (trainedLogits - exportedLogits).abs().max().item<float>();
        Assert.True(gap < 1e-4f, $"exported logits differ from the trained model's by {gap}");
        Assert.True((trainedLogits - baseLogits).abs().max().item<float>() > 1e-3f, "training must have changed the logits");
    }
}
