using System.Text.Json.Nodes;
using VisualChat.Data;
using VisualChat.Training;

namespace VisualChat.Tests.Training;

public class CheckpointAndConfigTests
{
    static JsonObject Manifest(long step, double? evalLoss) => new() {
        ["step"] = step, ["epoch"] = 0, ["metrics"] = new JsonObject { ["eval_loss"] = evalLoss },
    };

    [Fact]
    public void HalfWrittenCheckpointsAreIgnoredByAutoResumeAndBest()
    {
        using var kit = new TrainingTestKit();
        CheckpointStore.Write(kit.RunDir, "epoch-1", folder => File.WriteAllText(Path.Combine(folder, "x"), "a"), Manifest(3, 2.0));
        // A crash after writing the manifest but before the rename leaves a tmp folder that looks complete inside.
        var crashed = Path.Combine(kit.RunDir, "best.tmp-0123");
        Directory.CreateDirectory(crashed);
        var manifest = Manifest(9, 0.5);
        manifest["complete"] = true;
        File.WriteAllText(Path.Combine(crashed, CheckpointStore.ManifestFile), manifest.ToJsonString());
        // A crash mid-write of a final-named folder (no manifest) is not a checkpoint either.
        Directory.CreateDirectory(Path.Combine(kit.RunDir, "epoch-2"));
        File.WriteAllText(Path.Combine(kit.RunDir, "epoch-2", CheckpointStore.WeightsFile), "partial");

        Assert.Equal("epoch-1", CheckpointStore.Latest(kit.RunDir)!.Name);
        Assert.Equal("epoch-1", CheckpointStore.Best(kit.RunDir)!.Name);
        Assert.Single(CheckpointStore.List(kit.RunDir));
    }

    [Fact]
    public void RewritingACheckpointReplacesItAndLeavesNoTemporaryFolders()
    {
        using var kit = new TrainingTestKit();
        CheckpointStore.Write(kit.RunDir, "best", folder => File.WriteAllText(Path.Combine(folder, "x"), "old"), Manifest(1, 3.0));
        CheckpointStore.Write(kit.RunDir, "best", folder => File.WriteAllText(Path.Combine(folder, "x"), "new"), Manifest(2, 1.0));
        Assert.Equal("new", File.ReadAllText(Path.Combine(kit.RunDir, "best", "x")));
        Assert.Equal(2, CheckpointStore.TryRead(Path.Combine(kit.RunDir, "best"))!.Step);
        Assert.Equal(["best"], Directory.GetDirectories(kit.RunDir).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("learning_rate=0", "learning_rate", "> 0")]
    [InlineData("adam_beta1=1", "adam_beta1", "[0, 1)")]
    [InlineData("adam_beta2=-0.1", "adam_beta2", "[0, 1)")]
    [InlineData("warmup_ratio=1.5", "warmup_ratio", "[0, 1]")]
    [InlineData("gradient_accumulation_steps=0", "gradient_accumulation_steps", ">= 1")]
    [InlineData("lr_scheduler_type=\"exponential\"", "lr_scheduler_type", "cosine")]
    [InlineData("precision=fp8", "precision", "bf16")]
    [InlineData("on_nan=ignore", "on_nan", "stop or skip")]
    [InlineData("lora_dim=4", "lora_module_name", "at least one")]
    public void OutOfRangeValuesNameTheKey(string assignment, string key, string range)
    {
        var error = Assert.Throws<TrainingConfigException>(() => TrainingConfig.Parse("{}", "test", [assignment]));
        Assert.Contains($"'{key}'", error.Message);
        Assert.Contains(range, error.Message);
    }

    [Fact]
    public void UnknownKeysAreRejected()
    {
        var error = Assert.Throws<TrainingConfigException>(() => TrainingConfig.Parse("{\"learning_rat\": 1}", "cfg.json"));
        Assert.Contains("learning_rat", error.Message);
    }

    [Fact]
    public void YamlWithOverridesParses()
    {
        var path = Path.Combine(Path.GetTempPath(), $"train-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(path, "learning_rate: 0.0005\nlr_scheduler_type: linear\nunfreeze: [\"model.norm.*\"]\nmodel:\n  kind: llama-lm\n  config: c.json\n");
        try
        {
            var config = TrainingConfig.Load(path, ["num_train_epochs=3", "model.tokenizer=tok", "warmup_ratio=0.1"]);
            Assert.Equal(0.0005, config.LearningRate);
            Assert.Equal("linear", config.LrSchedulerType);
            Assert.Equal(["model.norm.*"], config.Unfreeze);
            Assert.Equal(3, config.NumTrainEpochs);
            Assert.Equal("tok", config.Model.Tokenizer);
            Assert.Equal(0.1, config.WarmupRatio);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void UnknownModelKindIsRejectedBeforeLoading()
    {
        var config = TrainingConfig.Parse("{\"model\": {\"kind\": \"flamingo\"}}");
        var error = Assert.Throws<TrainingConfigException>(() => TrainingRunFactory.Create(config));
        Assert.Contains("model.kind", error.Message);
        Assert.Contains("visualchat, llama-lm", error.Message);

        var incomplete = TrainingConfig.Parse("{\"model\": {\"kind\": \"visualchat\"}}");
        var missing = Assert.Throws<TrainingConfigException>(() => TrainingRunFactory.Create(incomplete));
        Assert.Contains("model.path", missing.Message);
        Assert.Contains("model.lm", missing.Message);
    }

    [Fact]
    public void LlamaLmRunTrainsFromAJsonlOfTexts()
    {
        using var kit = new TrainingTestKit();
        Directory.CreateDirectory(kit.RunDir);
        var shared = Path.Combine(VisualChat.Tests.Model.LlamaTestModels.RepoRoot(), "..", "shared", "models", "llama2-tokenizer");
        var modelConfig = TrainingTestKit.TinyConfig();
        modelConfig.VocabSize = 32000;
        modelConfig.HiddenSize = 16; modelConfig.IntermediateSize = 16; modelConfig.NumHiddenLayers = 1; modelConfig.NumAttentionHeads = 2; modelConfig.NumKeyValueHeads = 1;
        var configPath = Path.Combine(kit.RunDir, "config.json");
        modelConfig.Save(configPath);
        var dataPath = Path.Combine(kit.RunDir, "texts.jsonl");
        File.WriteAllLines(dataPath, Enumerable.Range(0, 10).Select(i => $"{{\"text\": \"The number {i} follows {i - 1} and comes before {i + 1}.\"}}"));
        var config = TrainingConfig.Parse("{}", "test", [
            $"model.config=\"{configPath}\"", $"model.tokenizer=\"{shared}\"", $"train_data=\"{dataPath}\"",
            $"output_dir=\"{Path.Combine(kit.RunDir, "run")}\"", "precision=fp32", "per_device_train_batch_size=4", "eval_fraction=0.5",
            "max_seq_len=24", "lr_scheduler_type=constant",
        ]);
        using var run = TrainingRunFactory.Create(config);
        var summary = run.Run();
        Assert.True(summary.Steps >= 2);
        Assert.NotNull(summary.BestEvalLoss);
        var final = CheckpointStore.TryRead(Path.Combine(kit.RunDir, "run", "final"))!;
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(final.Path, CheckpointStore.ManifestFile)))!;
        Assert.EndsWith("config.json", manifest["model"]!["config"]!.GetValue<string>());
        Assert.Equal("model.embed_tokens.weight", manifest["trainable"]![0]!.GetValue<string>());
    }
}
