using VisualChat.Benchmarks;
using VisualChat.Model;
using VisualChat.Tests.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Benchmarks;

public class Llama2cCheckpointTests
{
    [Fact]
    public void WritesTheLayoutRunCMapsKindByKindAcrossLayers()
    {
        var config = LlamaTestModels.Tiny();   // untied, 2 layers, hidden 64, 4 heads (2 KV) of 16, MLP 96, vocab 128
        using var model = new LlamaForCausalLM(config, seed: 3);
        string path = Path.Combine(Path.GetTempPath(), $"vchat-llama2c-test-{Environment.ProcessId}.bin");
        try
        {
            Llama2cCheckpoint.Write(model, path, sequenceLength: 10);
            var bytes = File.ReadAllBytes(path);
            var header = Enumerable.Range(0, 7).Select(i => BitConverter.ToInt32(bytes, 4 * i)).ToArray();
            // dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab (negative: an untied classifier follows), seq_len
            Assert.Equal([64, 96, 2, 4, 2, -128, 10], header);
            long[] counts = [128 * 64, 2 * 64, 2 * 64 * 64, 2 * 32 * 64, 2 * 32 * 64, 2 * 64 * 64, 2 * 64, 2 * 96 * 64, 2 * 64 * 96, 2 * 96 * 64, 64,
                2 * 10 * 8, 128 * 64];
            Assert.Equal(28 + 4 * counts.Sum(), bytes.Length);

            // run.c's memory_map_weights: wq of layer 1 follows wq of layer 0, after the embeddings and the attention norms;
            // w2 (down) comes before w3 (up); the classifier is last.
            float At(long floatIndex) => BitConverter.ToSingle(bytes, (int)(28 + 4 * floatIndex));
            var state = model.state_dict();
            float Weight(string name, long flatIndex) => state[name].reshape(-1)[flatIndex].item<float>();
            long wq = counts[0] + counts[1];
            Assert.Equal(Weight("model.layers.1.self_attn.q_proj.weight", 5), At(wq + 64 * 64 + 5));
            long w2 = counts.Take(8).Sum();
            Assert.Equal(Weight("model.layers.0.mlp.down_proj.weight", 7), At(w2 + 7));
            Assert.Equal(Weight("model.layers.1.mlp.up_proj.weight", 0), At(w2 + counts[8] + 96 * 64));
            Assert.Equal(Weight("model.norm.weight", 3), At(counts.Take(10).Sum() + 3));
            Assert.Equal(Weight("lm_head.weight", 11), At(counts.Take(12).Sum() + 11));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
