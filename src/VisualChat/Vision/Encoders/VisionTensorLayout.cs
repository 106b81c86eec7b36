namespace VisualChat.Vision.Encoders;

/// <summary>One tensor of an encoder's state_dict: its key and shape, known from the config alone.</summary>
public sealed record VisionTensorSpec(string Name, long[] Shape)
{
    public long Elements => Shape.Aggregate(1L, (a, b) => checked(a * b));
}

/// <summary>
/// The state_dict (names and shapes) of <see cref="ClipVisionModel"/> and <see cref="QwenVisionTransformer"/> computed
/// from their configs without building the modules, so presets can be described and written tensor by tensor at any
/// size. The names are the modules' own keys; tests compare this list with <c>state_dict()</c> of the tiny presets.
/// </summary>
public static class VisionTensorLayout
{
    public static IReadOnlyList<VisionTensorSpec> Clip(ClipVisionConfig config)
    {
        config.Validated();
        long d = config.HiddenSize, i = config.IntermediateSize;
        var specs = new List<VisionTensorSpec>
        {
            new("vision_model.embeddings.class_embedding", [d]),
            new("vision_model.embeddings.patch_embedding.weight", [d, config.NumChannels, config.PatchSize, config.PatchSize]),
            new("vision_model.embeddings.position_embedding.weight", [config.NumPositions, d]),
        };
        AddLayerNorm(specs, "vision_model.pre_layrnorm", d);
        for (var layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            var prefix = $"vision_model.encoder.layers.{layer}";
            foreach (var projection in new[] { "k_proj", "v_proj", "q_proj", "out_proj" })
                AddLinear(specs, $"{prefix}.self_attn.{projection}", d, d);
            AddLayerNorm(specs, $"{prefix}.layer_norm1", d);
            AddLinear(specs, $"{prefix}.mlp.fc1", d, i);
            AddLinear(specs, $"{prefix}.mlp.fc2", i, d);
            AddLayerNorm(specs, $"{prefix}.layer_norm2", d);
        }
        AddLayerNorm(specs, "vision_model.post_layernorm", d);
        return specs;
    }

    public static IReadOnlyList<VisionTensorSpec> Qwen(QwenVisionConfig config)
    {
        config.Validated();
        long w = config.Width, m = config.MlpSize, o = config.OutputDim, q = config.NQueries;
        var specs = new List<VisionTensorSpec>
        {
            new("conv1.weight", [w, 3, config.PatchSize, config.PatchSize]),
            new("positional_embedding", [config.PositionalEmbeddingSize, w]),
        };
        AddLayerNorm(specs, "ln_pre", w);
        for (var layer = 0; layer < config.Layers; layer++)
        {
            var prefix = $"transformer.resblocks.{layer}";
            AddLayerNorm(specs, $"{prefix}.ln_1", w);
            AddLinear(specs, $"{prefix}.attn.in_proj", w, 3 * w);
            AddLinear(specs, $"{prefix}.attn.out_proj", w, w);
            AddLayerNorm(specs, $"{prefix}.ln_2", w);
            AddLinear(specs, $"{prefix}.mlp.c_fc", w, m);
            AddLinear(specs, $"{prefix}.mlp.c_proj", m, w);
        }
        specs.Add(new("attn_pool.pos_embed", [q, o]));
        specs.Add(new("attn_pool.query", [q, o]));
        if (w != o) specs.Add(new("attn_pool.kv_proj.weight", [o, w]));
        specs.Add(new("attn_pool.attn.in_proj_weight", [3 * o, o]));
        specs.Add(new("attn_pool.attn.in_proj_bias", [3 * o]));
        AddLinear(specs, "attn_pool.attn.out_proj", o, o);
        AddLayerNorm(specs, "attn_pool.ln_q", o);
        AddLayerNorm(specs, "attn_pool.ln_kv", o);
        AddLayerNorm(specs, "ln_post", o);
        if (config.UseOutputProjection) specs.Add(new("proj", [o, o]));
        return specs;
    }

    public static long ParameterCount(IEnumerable<VisionTensorSpec> specs) => specs.Sum(s => s.Elements);

    private static void AddLinear(List<VisionTensorSpec> specs, string prefix, long inFeatures, long outFeatures)
    {
        specs.Add(new($"{prefix}.weight", [outFeatures, inFeatures]));
        specs.Add(new($"{prefix}.bias", [outFeatures]));
    }

    private static void AddLayerNorm(List<VisionTensorSpec> specs, string prefix, long width)
    {
        specs.Add(new($"{prefix}.weight", [width]));
        specs.Add(new($"{prefix}.bias", [width]));
    }
}
