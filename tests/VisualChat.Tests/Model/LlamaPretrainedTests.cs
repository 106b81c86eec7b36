using TorchSharp;
using VisualChat.Model;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Tests.Model;

public class LlamaPretrainedTests
{
    static readonly long[] Ids = [1, 17, 42, 99, 5, 63, 127, 2];

    static Tensor Logits(LlamaForCausalLM model)
    {
        using var noGrad = no_grad();
        using var ids = tensor(Ids).unsqueeze(0);
        return model.forward(new CausalLMInput(InputIds: ids)).Logits;
    }

    static Dictionary<string, Tensor> Weights(LlamaForCausalLM model) =>
        model.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SaveThenLoad_GivesIdenticalLogits(bool tied)
    {
        using var folder = new TempFolder();
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny(tied));
        model.SavePretrained(folder.Path);
        Assert.True(File.Exists(folder.File("model.safetensors")));
        Assert.Equal("float32", LlamaConfig.Load(folder.File("config.json")).TorchDtype);
        using var loaded = LlamaForCausalLM.FromPretrained(folder.Path);
        Assert.Equal(tied, loaded.lm_head is null);
        Assert.False(loaded.training);
        Assert.Equal(0f, LlamaTestModels.MaxAbsDiff(Logits(model), Logits(loaded)));
    }

    [Fact]
    public void Bf16Checkpoint_LoadsAsFp32OnCpu_WithBf16RoundedWeights()
    {
        using var folder = new TempFolder();
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny());
        model.SavePretrained(folder.Path, ScalarType.BFloat16);
        Assert.Equal("bfloat16", LlamaConfig.Load(folder.File("config.json")).TorchDtype);
        using (var source = TensorFiles.Open(folder.Path))
            Assert.All(source.Entries, e => Assert.Equal(ScalarType.BFloat16, e.DType));

        using var loaded = LlamaForCausalLM.FromPretrained(folder.Path);
        var original = model.state_dict();
        foreach (var (name, weight) in loaded.state_dict()) {
            Assert.Equal(ScalarType.Float32, weight.dtype);
            using var rounded = original[name].to(ScalarType.BFloat16).to(ScalarType.Float32);
            Assert.True(LlamaTestModels.MaxAbsDiff(weight, rounded) == 0f, $"{name} is not the bf16-rounded original");
        }
        var diff = LlamaTestModels.MaxAbsDiff(Logits(model), Logits(loaded));
        Assert.True(diff > 0 && diff < 0.05f, $"bf16 round trip changed logits by {diff}");
    }

    [Fact]
    public void ShardedSave_WritesIndexAndLoads_AndResavingRemovesStaleShards()
    {
        using var folder = new TempFolder();
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny());
        model.SavePretrained(folder.Path, maxShardBytes: 40_000);
        var shards = Directory.GetFiles(folder.Path, "model-*-of-*.safetensors");
        Assert.True(shards.Length > 2, $"expected several shards, got {shards.Length}");
        Assert.True(File.Exists(folder.File("model.safetensors.index.json")));
        Assert.False(File.Exists(folder.File("model.safetensors")));
        using (var loaded = LlamaForCausalLM.FromPretrained(folder.Path))
            Assert.Equal(0f, LlamaTestModels.MaxAbsDiff(Logits(model), Logits(loaded)));

        model.SavePretrained(folder.Path);
        Assert.Empty(Directory.GetFiles(folder.Path, "model-*-of-*.safetensors"));
        Assert.False(File.Exists(folder.File("model.safetensors.index.json")));
        using var reloaded = LlamaForCausalLM.FromPretrained(folder.Path);
        Assert.Equal(0f, LlamaTestModels.MaxAbsDiff(Logits(model), Logits(reloaded)));
    }

    /// <summary>Saves the tiny model, then rewrites its weights file with <paramref name="edit"/> applied.</summary>
    static void WriteEdited(TempFolder folder, bool tied, Action<Dictionary<string, Tensor>> edit)
    {
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny(tied));
        model.SavePretrained(folder.Path);
        var weights = Weights(model);
        edit(weights);
        TensorFiles.SaveSafetensors(folder.File("model.safetensors"), weights);
    }

    [Fact]
    public void MissingTensor_IsNamed()
    {
        using var folder = new TempFolder();
        WriteEdited(folder, false, w => w.Remove("model.layers.1.mlp.up_proj.weight"));
        var error = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(folder.Path));
        Assert.Contains("missing", error.Message);
        Assert.Contains("model.layers.1.mlp.up_proj.weight", error.Message);
    }

    [Fact]
    public void ExtraTensor_IsNamed()
    {
        using var folder = new TempFolder();
        WriteEdited(folder, false, w => w["model.layers.0.self_attn.rotary_emb.inv_freq"] = ones(8));
        var error = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(folder.Path));
        Assert.Contains("unexpected", error.Message);
        Assert.Contains("model.layers.0.self_attn.rotary_emb.inv_freq", error.Message);
    }

    [Fact]
    public void WrongShape_IsNamedWithBothShapes()
    {
        using var folder = new TempFolder();
        WriteEdited(folder, false, w => w["model.norm.weight"] = ones(63));
        var error = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(folder.Path));
        Assert.Contains("model.norm.weight", error.Message);
        Assert.Contains("[64]", error.Message);
        Assert.Contains("[63]", error.Message);
    }

    [Fact]
    public void ModulePrefixedCheckpoint_NamesTheUnexpectedKeys()
    {
        using var folder = new TempFolder();
        WriteEdited(folder, false, w => {
            foreach (var key in w.Keys.ToList()) { w["module." + key] = w[key]; w.Remove(key); }
        });
        var error = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(folder.Path));
        Assert.Contains("module.model.embed_tokens.weight", error.Message);
    }

    [Fact]
    public void TiedModel_IgnoresAnExportedLmHead()
    {
        using var folder = new TempFolder();
        WriteEdited(folder, true, w => w["lm_head.weight"] = w["model.embed_tokens.weight"].clone());
        using (var source = TensorFiles.Open(folder.Path)) Assert.True(source.Contains("lm_head.weight"));
        using var loaded = LlamaForCausalLM.FromPretrained(folder.Path);
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny(tied: true));
        Assert.Null(loaded.lm_head);
        Assert.Equal(0f, LlamaTestModels.MaxAbsDiff(Logits(model), Logits(loaded)));
    }

    [Fact]
    public void UntiedModel_StillRejectsAMissingLmHead()
    {
        using var folder = new TempFolder();
        WriteEdited(folder, false, w => w.Remove("lm_head.weight"));
        var error = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(folder.Path));
        Assert.Contains("lm_head.weight", error.Message);
    }

    [Fact]
    public void MissingFolderOrTokenizer_IsReported()
    {
        Assert.Throws<DirectoryNotFoundException>(() => LlamaForCausalLM.FromPretrained("/nonexistent/visualchat-model"));
        using var folder = new TempFolder();
        using var model = LlamaTestModels.ClosedFormModel(LlamaTestModels.Tiny());
        model.SavePretrained(folder.Path);
        var error = Assert.Throws<FileNotFoundException>(() => LanguageModelFolder.Load(folder.Path));
        Assert.Contains("no tokenizer", error.Message);
    }
}
