using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Model.Presets;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Tests.Model;

public class ModelPresetTests
{
    static readonly Dictionary<string, string> Pt = new() { ["format"] = "pt" };

    [Theory]
    [InlineData("llama2-7b", 6_738_415_616L)]
    [InlineData("llama2-13b", 13_015_864_320L)]
    [InlineData("llama2-70b", 68_976_648_192L)]
    [InlineData("tinyllama-1.1b", 1_100_048_384L)]
    public void Describe_GivesPublishedParameterCounts(string name, long expected)
    {
        var description = ModelPresetCatalog.Get(name).Describe();
        Assert.Equal(expected, description.ParameterCount);
        Assert.Equal(expected, description.Tensors.Sum(t => t.Elements));
        Assert.Equal(2 * expected, description.Bytes(ScalarType.BFloat16));
        Assert.Contains(expected.ToString("N0", System.Globalization.CultureInfo.InvariantCulture), description.Format());
    }

    [Fact]
    public void Llama2_70B_UsesEightKeyValueHeads()
    {
        var config = LanguageModelPresets.Llama2_70B.Config();
        Assert.Equal(8, config.KeyValueHeads);
        var k = LanguageModelPresets.Llama2_70B.Describe().Tensors.Single(t => t.Name == "model.layers.79.self_attn.k_proj.weight");
        Assert.Equal(new long[] { 1024, 8192 }, k.Shape);
    }

    [Fact]
    public void TinyLlamaPreset_MatchesTheRealConfig()
    {
        var real = LlamaConfig.Load(LlamaTestModels.SharedPath("models", "configs", "tinyllama-1.1b-config.json"));
        var preset = LanguageModelPresets.TinyLlama11B.Config();
        Assert.Equal(real.ParameterShapes().Select(t => (t.Name, string.Join(",", t.Shape))), preset.ParameterShapes().Select(t => (t.Name, string.Join(",", t.Shape))));
        Assert.Equal((real.RmsNormEps, real.RopeTheta, real.MaxPositionEmbeddings, real.TieWordEmbeddings),
            (preset.RmsNormEps, preset.RopeTheta, preset.MaxPositionEmbeddings, preset.TieWordEmbeddings));
    }

    [Fact]
    public void Llama100M_IsAbout100MParameters()
    {
        long count = LanguageModelPresets.Llama100M.Describe().ParameterCount;
        Assert.InRange(count, 90_000_000L, 120_000_000L);
    }

    [Fact]
    public void Catalog_ListsKindsAndRejectsUnknownNames()
    {
        // Names are unique within a kind; "tiny" exists as lm, vision and visualchat, and a bare name prefers the lm.
        Assert.Equal(ModelPresetCatalog.All.Count, ModelPresetCatalog.All.Select(p => (p.Name, p.Kind)).Distinct().Count());
        Assert.Equal(ModelPresetKind.VisualChatModel, ModelPresetCatalog.Get("tiny", ModelPresetKind.VisualChatModel).Kind);
        Assert.Equal(ModelPresetKind.VisionEncoder, ModelPresetCatalog.Get("clip-vit-large-patch14").Kind);
        Assert.Contains("(vision)", Assert.Throws<ArgumentException>(() => ModelPresetCatalog.Get("llama2-7b", ModelPresetKind.VisionEncoder)).Message);
        Assert.All(ModelPresetCatalog.OfKind(ModelPresetKind.LanguageModel), p => Assert.IsType<LanguageModelPreset>(p));
        var error = Assert.Throws<ArgumentException>(() => ModelPresetCatalog.Get("gpt-5"));
        Assert.Contains("llama2-7b", error.Message);
        Assert.Same(LanguageModelPresets.Tiny, ModelPresetCatalog.Get("TINY"));
    }

    [Fact]
    public void TinyTokenizer_IsDeterministicAndMatchesTheConfig()
    {
        var a = TinyTokenizer.BuildModel();
        var b = TinyTokenizer.BuildModel();
        Assert.Equal(a.ToBytes(), b.ToBytes());
        var tokenizer = TinyTokenizer.Build();
        Assert.Equal(LanguageModelPresets.Tiny.Config().VocabSize, tokenizer.VocabSize);
        Assert.InRange(tokenizer.VocabSize, 259 + 200, 2000);
        string text = "The cat is sitting on the chair.";
        var ids = tokenizer.Encode(text);
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.True(ids.Count < text.Length / 2, $"merges should shorten common words: {ids.Count} ids for {text.Length} characters");
        Assert.Equal("héllo ✓", tokenizer.Decode(tokenizer.Encode("héllo ✓")));
    }

    [Fact]
    public void TinyPreset_WritesAFolderThatLoadsAndGenerates()
    {
        using var folder = new TempFolder();
        var result = LanguageModelPresets.Tiny.Write(folder.Path, new PresetWriteOptions { Seed = 1 });
        Assert.True(result.HasTokenizer);
        Assert.Contains("model.safetensors", result.Files);
        var (model, tokenizer) = LanguageModelFolder.Load(folder.Path);
        using var _ = model;
        Assert.Equal(model.Config.VocabSize, tokenizer.VocabSize);
        Assert.Equal("float32", model.Config.TorchDtype);
        var norm = model.model.norm.weight;
        Assert.Equal(1f, norm.min().item<float>());
        var std = model.model.layers[0].mlp.up_proj.Weight().std().item<float>();
        Assert.InRange(std, 0.018f, 0.022f);

        var prompt = tokenizer.Encode("The cat", addBos: true);
        var generated = TextGenerator.Generate(model, tokenizer, prompt, new GenerationOptions { MaxNewTokens = 6, StopTokenIds = Array.Empty<int>() });
        Assert.Equal(6, generated.TokenIds.Count);

        // The same seed writes the same weights; another seed does not.
        using var again = new TempFolder();
        LanguageModelPresets.Tiny.Write(again.Path, new PresetWriteOptions { Seed = 1 });
        Assert.Equal(File.ReadAllBytes(folder.File("model.safetensors")), File.ReadAllBytes(again.File("model.safetensors")));
        LanguageModelPresets.Tiny.Write(again.Path, new PresetWriteOptions { Seed = 2 });
        Assert.NotEqual(File.ReadAllBytes(folder.File("model.safetensors")), File.ReadAllBytes(again.File("model.safetensors")));
    }

    [Fact]
    public void StreamingWriter_LaysOutFilesExactlyAsStateDictSave()
    {
        var config = LlamaTestModels.Tiny();
        using var model = LlamaTestModels.ClosedFormModel(config);
        using var expected = new TempFolder();
        StateDict.Save(model, expected.Path, ScalarType.BFloat16);

        using var streamed = new TempFolder();
        var shapes = config.ParameterShapes().ToList();
        Assert.Equal(model.state_dict().Keys.OrderBy(k => k, StringComparer.Ordinal), shapes.Select(s => s.Name).OrderBy(k => k, StringComparer.Ordinal));
        TensorFiles.SaveShardedStreaming(streamed.Path, shapes, ScalarType.BFloat16, LlamaTestModels.ClosedFormWeight, LlamaForCausalLM.DefaultMaxShardBytes, metadata: Pt);
        Assert.Equal(File.ReadAllBytes(expected.File("model.safetensors")), File.ReadAllBytes(streamed.File("model.safetensors")));
    }

    [Fact]
    public void StreamingWriter_ShardsWithAnIndexThatLoads()
    {
        var config = LlamaTestModels.Tiny();
        using var folder = new TempFolder();
        config.Save(folder.File("config.json"));
        var files = TensorFiles.SaveShardedStreaming(folder.Path, config.ParameterShapes().ToList(), ScalarType.Float16, LlamaTestModels.ClosedFormWeight, 30_000, metadata: Pt);
        Assert.Equal("model.safetensors.index.json", files[^1]);
        Assert.True(files.Count > 3);

        // Header of the first shard: little-endian length, JSON padded to 8 bytes, contiguous offsets.
        var bytes = File.ReadAllBytes(folder.File(files[0]));
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, headerLength % 8);
        using var header = JsonDocument.Parse(Encoding.UTF8.GetString(bytes, 8, (int)headerLength));
        long offset = 0;
        foreach (var entry in header.RootElement.EnumerateObject().Where(e => e.Name != "__metadata__")) {
            Assert.Equal("F16", entry.Value.GetProperty("dtype").GetString());
            var range = entry.Value.GetProperty("data_offsets").EnumerateArray().Select(v => v.GetInt64()).ToArray();
            Assert.Equal(offset, range[0]);
            offset = range[1];
        }
        Assert.Equal(bytes.Length - 8 - headerLength, offset);

        using var loaded = LlamaForCausalLM.FromPretrained(folder.Path);
        foreach (var (name, weight) in loaded.state_dict()) {
            using var want = LlamaTestModels.ClosedFormWeight(name, weight.shape).to(ScalarType.Float16).to(ScalarType.Float32);
            Assert.True(LlamaTestModels.MaxAbsDiff(weight, want) == 0f, name);
        }
    }

    [Fact]
    public void Write_RefusesWhenTheDiskIsTooSmall()
    {
        using var folder = new TempFolder();
        var error = Assert.Throws<IOException>(() => LanguageModelPreset.EnsureFreeSpace(folder.Path, long.MaxValue / 4));
        Assert.Contains("Not enough disk space", error.Message);
        Assert.Contains(folder.Path, error.Message);
        LanguageModelPreset.EnsureFreeSpace(folder.Path, 1024);
    }

    [Fact]
    public void LlamaPreset_WithoutTokenizerSaysSo_AndCopiesAGivenOne()
    {
        // A 32000-vocab preset is too big for a unit test; the tokenizer step is checked on its own through Write's
        // validation: a tokenizer larger than the vocabulary is refused before any weight is written.
        using var folder = new TempFolder();
        var small = new LanguageModelPreset("small-32k", "test", () => {
            var c = LlamaTestModels.Tiny();
            c.VocabSize = 32000;
            c.HiddenSize = 8; c.NumAttentionHeads = 2; c.NumKeyValueHeads = 1; c.IntermediateSize = 8; c.NumHiddenLayers = 1;
            return c;
        }, ScalarType.BFloat16);
        var log = new StringWriter();
        var bare = small.Write(folder.Path, new PresetWriteOptions { Log = log });
        Assert.False(bare.HasTokenizer);
        Assert.Contains("no tokenizer", log.ToString());

        string llamaTokenizer = LlamaTestModels.SharedPath("models", "llama2-tokenizer");
        var withTokenizer = small.Write(folder.Path, new PresetWriteOptions { TokenizerPath = llamaTokenizer });
        Assert.True(withTokenizer.HasTokenizer);
        var (model, tokenizer) = LanguageModelFolder.Load(folder.Path);
        using var _ = model;
        Assert.Equal(32000, tokenizer.VocabSize);
        Assert.Equal(ScalarType.Float32, model.model.norm.weight.dtype);
    }
}

[Collection(ProcessWideStateCollection.Name)]
public class CpuThreadPolicyTests
{
    [Fact]
    public void SmallModelsRunOnOneThreadUnlessTheEnvironmentSaysOtherwise()
    {
        int before = TorchSharp.torch.get_num_threads();
        var previous = Environment.GetEnvironmentVariable(DevicePolicy.ThreadsVariable);
        try
        {
            Environment.SetEnvironmentVariable(DevicePolicy.ThreadsVariable, null);
            Assert.Equal(1, DevicePolicy.ConfigureCpuThreads(100_000));
            Environment.SetEnvironmentVariable(DevicePolicy.ThreadsVariable, "2");
            Assert.Equal(2, DevicePolicy.ConfigureCpuThreads(100_000));
        }
        finally
        {
            Environment.SetEnvironmentVariable(DevicePolicy.ThreadsVariable, previous);
            TorchSharp.torch.set_num_threads(before);
        }
    }
}
