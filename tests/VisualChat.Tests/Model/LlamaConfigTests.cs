using VisualChat.Model;

namespace VisualChat.Tests.Model;

public class LlamaConfigTests
{
    [Fact]
    public void ParsesTinyLlamaConfig()
    {
        var config = LlamaConfig.Load(LlamaTestModels.SharedPath("models", "configs", "tinyllama-1.1b-config.json"));
        Assert.Equal(32000, config.VocabSize);
        Assert.Equal(2048, config.HiddenSize);
        Assert.Equal(5632, config.IntermediateSize);
        Assert.Equal(22, config.NumHiddenLayers);
        Assert.Equal(32, config.NumAttentionHeads);
        Assert.Equal(4, config.KeyValueHeads);
        Assert.Equal(64, config.HeadDim);
        Assert.Equal(1e-5, config.RmsNormEps);
        Assert.Equal(10000.0, config.RopeTheta);
        Assert.Null(config.RopeScaling);
        Assert.False(config.TieWordEmbeddings);
        Assert.Equal(new[] { 2 }, config.EosTokenIds);
        Assert.Equal("float32", config.StorageDtype);
        // TinyLlama-1.1B's published parameter count.
        Assert.Equal(1_100_048_384L, config.ParameterCount());
        Assert.Equal(4 * 1_100_048_384L, config.ParameterBytes());
        Assert.Equal(2 * 1_100_048_384L, config.ParameterBytes("bfloat16"));
    }

    [Fact]
    public void DescribesLlama2_70BWithoutAllocating()
    {
        var config = LlamaConfig.Parse("""
            {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "vocab_size": 32000, "rms_norm_eps": 1e-5, "torch_dtype": "float16",
             "max_position_embeddings": 4096, "eos_token_id": 2}
            """);
        Assert.Equal(68_976_648_192L, config.ParameterCount());
        Assert.Equal("float16", config.StorageDtype);
        Assert.Equal(2 * 68_976_648_192L, config.ParameterBytes());
    }

    [Fact]
    public void ReadsOldAndNewFieldSpellings()
    {
        var config = LlamaConfig.Parse("""
            {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 128,
             "eos_token_id": [128001, 128009], "dtype": "bfloat16",
             "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192}}
            """);
        Assert.Equal(new[] { 128001, 128009 }, config.EosTokenIds);
        Assert.Equal("bfloat16", config.StorageDtype);
        Assert.Equal("llama3", config.RopeScaling!.Kind);
        Assert.Equal(4, config.KeyValueHeads);   // absent → one KV head per query head

        var linear = LlamaConfig.Parse("""{"hidden_size": 64, "num_attention_heads": 4, "rope_scaling": {"type": "linear", "factor": 2.0}}""");
        Assert.Equal("linear", linear.RopeScaling!.Kind);
        Assert.Equal(2.0, linear.RopeScaling.Factor);
    }

    [Theory]
    [InlineData("""{"hidden_size": 65, "num_attention_heads": 4}""", "hidden_size (65) must be divisible by num_attention_heads (4)")]
    [InlineData("""{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 3}""", "num_attention_heads (4) must be divisible by num_key_value_heads (3)")]
    [InlineData("""{"hidden_size": 64, "num_attention_heads": 4, "rope_scaling": {"type": "yarn", "factor": 2.0}}""", "rope_scaling type 'yarn' is not supported")]
    [InlineData("""{"hidden_size": 64, "num_attention_heads": 4, "hidden_act": "gelu"}""", "hidden_act 'gelu'")]
    public void RejectsInconsistentConfigs(string json, string message)
    {
        var error = Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse(json, "my/config.json"));
        Assert.Contains(message, error.Message);
        Assert.Contains("my/config.json", error.Message);
    }

    [Fact]
    public void SaveRoundTrips()
    {
        var original = LlamaConfig.Load(LlamaTestModels.SharedPath("models", "configs", "tinyllama-1.1b-config.json"));
        var path = Path.Combine(Path.GetTempPath(), $"llama-config-{Guid.NewGuid():N}.json");
        try {
            original.Save(path);
            var reloaded = LlamaConfig.Load(path);
            Assert.Equal(original.ToJson(), reloaded.ToJson());
            Assert.Equal(original.ParameterCount(), reloaded.ParameterCount());
            Assert.Contains("\"num_key_value_heads\": 4", File.ReadAllText(path));
        } finally { File.Delete(path); }
    }
}
