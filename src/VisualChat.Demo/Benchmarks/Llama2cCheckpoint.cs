using TorchSharp;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Benchmarks;

/// <summary>
/// Writes a LLaMA in llama2.c's checkpoint layout (the "legacy" fp32 format its <c>run.c</c> memory-maps: seven int32
/// config fields, then the tensors kind by kind across layers), so <c>bench decode --peer-llama2c</c> can time llama2.c
/// on the very weights it times ours on. Only for that comparison: llama2.c rotates interleaved pairs where HF rotates
/// halves, so its tokens differ from ours, while the work per token — every weight read once — is the same.
/// </summary>
public static class Llama2cCheckpoint
{
    /// <summary>Entries of the tokenizer.bin llama2.c ships (LLaMA's vocabulary): run.c reads vocab_size of them.</summary>
    public const int TokenizerVocabulary = 32000;

    /// <param name="sequenceLength">llama2.c's seq_len: the KV cache it allocates, and the most tokens it decodes.</param>
    public static void Write(LlamaForCausalLM model, string path, int sequenceLength)
    {
        var c = model.Config;
        if (c.NumAttentionHeads * c.HeadDim != c.HiddenSize)
            throw new ArgumentException($"llama2.c needs heads × head_dim = hidden ({c.NumAttentionHeads} × {c.HeadDim} ≠ {c.HiddenSize}).", nameof(model));
        var tensors = model.state_dict();
        Tensor Get(string name) => tensors.TryGetValue(name, out var t) ? t : throw new ArgumentException($"The model has no tensor '{name}'.", nameof(model));
        var order = new List<Tensor> { Get("model.embed_tokens.weight") };
        void PerLayer(string suffix)
        {
            for (int i = 0; i < c.NumHiddenLayers; i++) order.Add(Get($"model.layers.{i}.{suffix}"));
        }
        PerLayer("input_layernorm.weight");
        PerLayer("self_attn.q_proj.weight");
        PerLayer("self_attn.k_proj.weight");
        PerLayer("self_attn.v_proj.weight");
        PerLayer("self_attn.o_proj.weight");
        PerLayer("post_attention_layernorm.weight");
        PerLayer("mlp.gate_proj.weight");   // w1
        PerLayer("mlp.down_proj.weight");   // w2
        PerLayer("mlp.up_proj.weight");     // w3
        order.Add(Get("model.norm.weight"));

        string temporary = path + ".tmp";
        using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write))
        using (var writer = new BinaryWriter(file))
        {
            // A negative vocab_size tells run.c the classifier follows (untied); it is skipped otherwise.
            int[] header = [c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.KeyValueHeads,
                c.TieWordEmbeddings ? c.VocabSize : -c.VocabSize, sequenceLength];
            foreach (int value in header) writer.Write(value);
            foreach (var tensor in order) WriteFloats(writer, tensor);
            // The RoPE tables of the format's first version: run.c skips them, the layout keeps their room.
            writer.Write(new byte[2L * sequenceLength * (c.HeadDim / 2) * sizeof(float)]);
            if (!c.TieWordEmbeddings) WriteFloats(writer, Get("lm_head.weight"));
        }
        File.Move(temporary, path, overwrite: true);
    }

    static void WriteFloats(BinaryWriter writer, Tensor tensor)
    {
        using var scope = NewDisposeScope();
        var values = tensor.detach().to(ScalarType.Float32).contiguous();
        writer.Write(values.bytes);
    }
}
