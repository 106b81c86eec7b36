using System.Text.Json.Nodes;
using TorchSharp;
using VisualChat.Conversations;
using VisualChat.Model;
using VisualChat.Tests.Model;
using VisualChat.Tests.Vision.Pretrained;
using TempFolder = VisualChat.Tests.Model.TempFolder;
using VisualChat.Tests.Weights;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Projection;
using VisualChat.Weights;
using Xunit;
using static TorchSharp.torch;

namespace VisualChat.Tests.Multimodal;

/// <summary>
/// Tiny DeepSpeed-VisualChat checkpoints in the layout its training writes (pytorch_model.bin with DeepSpeedViLModel's
/// keys, train_args.pt, the tokenizer with DSVC's three added tokens), imported and checked against a reference forward
/// written here with plain torch ops on the checkpoint's own tensors.
/// </summary>
public sealed class DsvcCheckpointTests
{
    const int Vocab = 301;               // the tiny tokenizer's pieces
    const int DsvcRows = Vocab + 3;      // + "### Image:", "<image>", "<PAD>" (add_special_token's order)
    const int DsvcImageRow = Vocab + 1;

    static JsonObject TextConfig(int hidden) => new()
    {
        ["model_type"] = "llama", ["vocab_size"] = Vocab, ["hidden_size"] = hidden, ["intermediate_size"] = 128,
        ["num_hidden_layers"] = 2, ["num_attention_heads"] = 4, ["num_key_value_heads"] = 2, ["rms_norm_eps"] = 1e-5,
        ["max_position_embeddings"] = 256, ["torch_dtype"] = "float32",
    };

    static readonly JsonObject VisionConfig = new()
    {
        ["model_type"] = "clip_vision_model", ["hidden_size"] = 32, ["intermediate_size"] = 64, ["num_hidden_layers"] = 3,
        ["num_attention_heads"] = 4, ["image_size"] = 32, ["patch_size"] = 8, ["projection_dim"] = 16, ["hidden_act"] = "quick_gelu",
        ["layer_norm_eps"] = 1e-5,
    };

    sealed record Fixture(string Checkpoint, string Lm, string Vision, Dictionary<string, Tensor> Weights);

    /// <summary>Random weights under DeepSpeedViLModel's names (norm weights near 1): vis_encoder.* (with the old
    /// position_ids buffer), lang_decoder.* resized to the tokenizer, lang_embed.weight, projection.* of <paramref name="projection"/>.</summary>
    static Dictionary<string, Tensor> Weights(ProjectionKind projection, int hidden, long seed)
    {
        var text = LlamaConfig.Parse(TextConfig(hidden).ToJsonString());
        var vision = ClipVisionConfig.Parse(VisionConfig.ToJsonString());
        using var generator = new Generator((ulong)seed);
        var names = new List<(string Name, long[] Shape)>();
        using (var lm = new LlamaForCausalLM(text, seed: null, initialize: false)) {
            foreach (var (name, value) in lm.state_dict())
                names.Add(("lang_decoder." + name, name is "model.embed_tokens.weight" or "lm_head.weight" ? [DsvcRows, hidden] : value.shape));
        }
        using (var clip = new ClipVisionModel(vision))
            names.AddRange(clip.state_dict().Select(p => ("vis_encoder." + p.Key, p.Value.shape)));
        names.Add(("lang_embed.weight", [DsvcRows, hidden]));
        var weights = new Dictionary<string, Tensor>();
        using (var module = (nn.Module)ProjectionFactory.Create(projection, 32, hidden, new ProjectionOptions(vision, 16, null))) {
            foreach (var (name, value) in module.state_dict()) {
                if (name == "pos_embed") weights["projection." + name] = value.detach().clone();   // DSVC's fixed sin-cos table
                else names.Add(("projection." + name, value.shape));
            }
        }
        foreach (var (name, shape) in names) {
            var noise = randn(shape, generator: generator);
            bool norm = shape.Length == 1 && name.EndsWith(".weight") && (name.Contains("norm") || name.Contains("layrnorm") || name.Contains("ln_") || name.EndsWith("1.weight"));
            weights[name] = norm ? noise.mul(0.1).add(1.0) : noise.mul(0.2);
        }
        weights["vis_encoder.vision_model.embeddings.position_ids"] = arange(17L).unsqueeze(0);
        return weights;
    }

    /// <summary>The LLaMA folder (config.json and tokenizer.model; its weights only when <paramref name="withWeights"/>),
    /// the CLIP folder, and the DSVC epoch folder: pytorch_model.bin, train_args.pt, tokenizer with DSVC's added tokens.</summary>
    static Fixture Write(string root, Dictionary<string, Tensor> weights, int hidden, Dictionary<string, object?>? trainArgs,
        Func<string, bool>? keep = null, bool withWeights = false)
    {
        string checkpoint = Path.Combine(root, "epoch-0"), lm = Path.Combine(root, "llama"), vision = Path.Combine(root, "clip"), tinyFolder = Path.Combine(root, "tiny");
        Directory.CreateDirectory(checkpoint);
        Directory.CreateDirectory(lm);
        Directory.CreateDirectory(vision);
        File.WriteAllText(Path.Combine(lm, "config.json"), TextConfig(hidden).ToJsonString());
        File.WriteAllText(Path.Combine(vision, "config.json"), VisionConfig.ToJsonString());

        var tiny = VisualChatPresets.CreateTinyTokenizer();
        tiny.Save(tinyFolder);
        var baseTokenizer = SentencePieceTokenizer.FromFile(Path.Combine(tinyFolder, TokenizerFactory.ModelFileName));
        baseTokenizer.Save(lm);
        var dsvcTokenizer = SentencePieceTokenizer.FromFile(Path.Combine(tinyFolder, TokenizerFactory.ModelFileName));
        dsvcTokenizer.AddSpecialTokens(["### Image:", "<image>"]);
        dsvcTokenizer.AddSpecialTokens(["<PAD>"]);
        dsvcTokenizer.Save(checkpoint);

        if (withWeights) {
            var lmTensors = weights.Where(p => p.Key.StartsWith("lang_decoder.", StringComparison.Ordinal))
                .Select(p => new KeyValuePair<string, Tensor>(p.Key["lang_decoder.".Length..],
                    p.Key is "lang_decoder.model.embed_tokens.weight" or "lang_decoder.lm_head.weight" ? p.Value.narrow(0, 0, Vocab).contiguous() : p.Value));
            TensorFiles.SaveSafetensors(Path.Combine(lm, "model.safetensors"), lmTensors);
            TensorFiles.SaveSafetensors(Path.Combine(vision, "model.safetensors"), weights
                .Where(p => p.Key.StartsWith("vis_encoder.", StringComparison.Ordinal) && !p.Key.EndsWith("position_ids"))
                .Select(p => new KeyValuePair<string, Tensor>(p.Key["vis_encoder.".Length..], p.Value)));
        }
        TorchSaveWriter.SaveStateDict(Path.Combine(checkpoint, DsvcCheckpoint.WeightsFile), weights.Where(p => keep?.Invoke(p.Key) ?? true));
        if (trainArgs is not null) TorchSaveWriter.SaveDict(Path.Combine(checkpoint, DsvcCheckpoint.TrainArgsFile), trainArgs);
        return new Fixture(checkpoint, lm, vision, weights);
    }

    static Dictionary<string, object?> TrainArgs(string visProj, bool mmca, string? lm = "/data/llama-2-7b-hf", string? vision = "/data/clip-vit-large-patch14") => new()
    {
        ["lm_model_name_or_path"] = lm, ["vision_model_name_or_path"] = vision, ["vis_proj"] = visProj,
        ["enable_mmca_attention"] = mmca, ["max_seq_len"] = 4096L, ["learning_rate"] = 1e-3, ["dataset_names"] = new[] { "llava", "otter_mimicit_cgd" },
        ["zero_stage"] = 2L, ["deepspeed_config"] = null,
    };

    // ---- the reference: DeepSpeedViLModel's forward written out with plain torch ops ----

    static Tensor LayerNorm(Tensor x, IReadOnlyDictionary<string, Tensor> w, string prefix) =>
        nn.functional.layer_norm(x, new[] { x.shape[^1] }, w[prefix + ".weight"], w[prefix + ".bias"], 1e-12);

    /// <summary>CLIP last_hidden_state (CLS kept) → baseline projection (Linear → LayerNorm(eps 1e-12)); each &lt;image&gt;
    /// replaced by its image's tokens in lang_embed's embeddings (DSVC's concat); the LM's logits over the vocabulary.</summary>
    static Tensor ReferenceLogits(IReadOnlyDictionary<string, Tensor> w, int[] ids, Tensor pixels, int imageId)
    {
        var features = LlavaCheckpointTests.ClipHidden(pixels, w, "vis_encoder.", layer: 3, heads: 4, patch: 8);
        var projected = LayerNorm(LlavaCheckpointTests.Linear(features, w, "projection.0"), w, "projection.1");
        var table = w["lang_embed.weight"];
        var pieces = new List<Tensor>();
        int image = 0;
        foreach (var id in ids) pieces.Add(id == imageId ? projected[image++] : table[id].unsqueeze(0));
        var embeds = cat(pieces, 0).unsqueeze(0);
        var logits = LlavaCheckpointTests.LlamaLogits(embeds, w, "lang_decoder.model.", "lang_decoder.lm_head.", heads: 4, kvHeads: 2, layers: 2);
        return logits.narrow(2, 0, Vocab);   // DSVC's resized head rows for its added tokens were never trained
    }

    static float MaxAbsDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    static Tensor Forward(VisualChatModel model, int[] ids, Tensor pixels, int images)
    {
        using var noGrad = no_grad();
        return model.forward(new VisualChatBatch(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0), null, null, [images], pixels)).Logits;
    }

    [Fact]
    public void BaselineCausalCheckpointMatchesTheReferenceForward()
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var weights = Weights(ProjectionKind.Baseline, hidden: 64, seed: 5);
        var fixture = Write(temp.Path, weights, 64, TrainArgs("baseline", mmca: false));
        var log = new List<string>();
        using var model = DsvcCheckpoint.Load(fixture.Checkpoint, new DsvcImportOptions { LanguageModelFolder = fixture.Lm, VisionFolder = fixture.Vision }, log.Add);

        Assert.Equal(AttentionMode.Causal, model.Config.AttentionMode);
        Assert.Equal(ProjectionKind.Baseline, model.Projection.Kind);
        Assert.Equal(PromptStyle.DeepSpeedVisualChat, model.Config.TemplateOptions.Style);
        Assert.Equal(17, model.ImageTokens);                     // 16 patches + CLS: DSVC keeps last_hidden_state whole
        Assert.Equal(Vocab, model.Config.ImageTokenId);
        Assert.Equal(Vocab + 1, model.EmbeddingRows);
        Assert.Equal(Vocab, model.Tokenizer!.TokenToId("<image>"));
        Assert.Null(model.Tokenizer.TokenToId("<PAD>"));
        Assert.Contains(log, line => line.Contains($"from row {DsvcImageRow}"));
        // The image row is lang_embed's "<image>" row, not "### Image:" or "<PAD>".
        Assert.True(model.lm.model.embed_tokens.weight![Vocab].equal(weights["lang_embed.weight"][DsvcImageRow]).all().item<bool>());

        using var generator = new Generator(9);
        var pixels = randn(new long[] { 2, 3, 32, 32 }, generator: generator);
        int[] ids = [1, 33, 40, Vocab, 50, 61, Vocab, 70, 80];
        var expected = ReferenceLogits(weights, ids, pixels, Vocab);
        var actual = Forward(model, ids, pixels, 2);
        long length = ids.Length + 2 * 16;
        Assert.Equal(length, expected.shape[1]);
        Assert.True(MaxAbsDiff(actual.narrow(1, 0, length), expected) < 1e-4, $"max |Δ| = {MaxAbsDiff(actual.narrow(1, 0, length), expected)}");
    }

    [Fact]
    public void MmcaPerceiverCheckpointPutsEveryTensorInPlaceAndSurvivesSaveAndLoad()
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var weights = Weights(ProjectionKind.Perceiver, hidden: 128, seed: 6);   // DSVC's perceiver: hidden / 128 heads
        // LoRA factors beside the fused weights (save_hf_format keeps them) must be ignored.
        weights["lang_decoder.model.layers.0.self_attn.q_proj.lora_right_weight"] = randn(128, 8);
        weights["lang_decoder.model.layers.0.self_attn.q_proj.lora_left_weight"] = randn(8, 128);
        var fixture = Write(temp.Path, weights, 128, TrainArgs("perceiver", mmca: true));
        using var model = DsvcCheckpoint.Load(fixture.Checkpoint, new DsvcImportOptions { LanguageModelFolder = fixture.Lm, VisionFolder = fixture.Vision });

        Assert.Equal(AttentionMode.Mmca, model.Config.AttentionMode);
        Assert.Equal(ProjectionKind.Perceiver, model.Projection.Kind);
        Assert.Equal(256, model.ImageTokens);
        var state = model.state_dict();
        foreach (var (name, value) in weights) {
            string? ours = name switch
            {
                _ when name.Contains("lora_") || name.EndsWith("position_ids") => null,
                "lang_embed.weight" or "lang_decoder.model.embed_tokens.weight" => null,
                "lang_decoder.lm_head.weight" => "lm.lm_head.weight",
                _ when name.StartsWith("vis_encoder.") => "vision." + name["vis_encoder.".Length..],
                _ when name.StartsWith("lang_decoder.") => "lm." + name["lang_decoder.".Length..],
                _ => name,
            };
            if (ours is null) continue;
            var expected = name == "lang_decoder.lm_head.weight" ? value.narrow(0, 0, Vocab) : value;
            Assert.True(state[ours].equal(expected).all().item<bool>(), $"{name} → {ours} differs");
        }
        Assert.True(state["lm.model.embed_tokens.weight"].narrow(0, 0, Vocab).equal(weights["lang_embed.weight"].narrow(0, 0, Vocab)).all().item<bool>());

        using var generator = new Generator(10);
        var pixels = randn(new long[] { 1, 3, 32, 32 }, generator: generator);
        int[] ids = [1, 33, Vocab, 50, 61];
        var before = Forward(model, ids, pixels, 1);
        Assert.True(before.isfinite().all().item<bool>());
        model.Save(temp.File("imported"));
        using var reloaded = VisualChatModel.Load(temp.File("imported"));
        Assert.Equal(AttentionMode.Mmca, reloaded.Config.AttentionMode);
        Assert.Equal(0f, MaxAbsDiff(Forward(reloaded, ids, pixels, 1), before));
    }

    /// <summary>A checkpoint with only the trained parts (lang_embed, projection), as after stripping the frozen
    /// weights: the LM and CLIP weights come from their folders, and the forward still equals the reference.</summary>
    [Fact]
    public void FrozenPartsMissingFromTheCheckpointAreReadFromTheirFolders()
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var weights = Weights(ProjectionKind.Baseline, hidden: 64, seed: 7);
        var fixture = Write(temp.Path, weights, 64, trainArgs: null, keep: name => name == "lang_embed.weight" || name.StartsWith("projection."), withWeights: true);
        var log = new List<string>();
        using var model = DsvcCheckpoint.Load(Path.Combine(fixture.Checkpoint, DsvcCheckpoint.WeightsFile),
            new DsvcImportOptions { LanguageModelFolder = fixture.Lm, VisionFolder = fixture.Vision, AttentionMode = AttentionMode.Causal }, log.Add);
        Assert.Contains(log, line => line.StartsWith("vision encoder: not in the checkpoint"));
        Assert.Contains(log, line => line.StartsWith("language model: not in the checkpoint"));

        using var generator = new Generator(11);
        var pixels = randn(new long[] { 1, 3, 32, 32 }, generator: generator);
        int[] ids = [1, Vocab, 44, 45, 46];
        var expected = ReferenceLogits(weights, ids, pixels, Vocab);
        var actual = Forward(model, ids, pixels, 1).narrow(1, 0, expected.shape[1]);
        Assert.True(MaxAbsDiff(actual, expected) < 1e-4, $"max |Δ| = {MaxAbsDiff(actual, expected)}");
    }

    /// <summary>DSVC with its Qwen-VL tower (<c>--vision_model_name_or_path qwen_clip</c>): vis_encoder.* holds the
    /// extracted tower's unprefixed keys; the imported encoder equals the tower loaded from its own folder.</summary>
    [Fact]
    public void QwenVlTowerImportsFromTheCheckpoint()
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        string tower = PretrainedTestSupport.FixturePath("qwen-dsvc-micro");
        var weights = Weights(ProjectionKind.Baseline, hidden: 64, seed: 13)
            .Where(p => !p.Key.StartsWith("vis_encoder.") && !p.Key.StartsWith("projection."))
            .ToDictionary(p => p.Key, p => p.Value);
        using (var source = TensorFiles.Open(Path.Combine(tower, "pytorch_model.bin")))
            foreach (var entry in source.Entries) weights["vis_encoder." + entry.Name] = source.Read(entry.Name);
        using (var projection = (nn.Module)ProjectionFactory.Create(ProjectionKind.Baseline, 16, 64)) {
            foreach (var (name, value) in projection.state_dict()) weights["projection." + name] = randn(value.shape);
        }
        var fixture = Write(temp.Path, weights, 64, TrainArgs("baseline", mmca: true));
        File.Copy(Path.Combine(tower, "config.json"), Path.Combine(fixture.Vision, "config.json"), overwrite: true);

        using var model = DsvcCheckpoint.Load(fixture.Checkpoint, new DsvcImportOptions { LanguageModelFolder = fixture.Lm, VisionFolder = fixture.Vision });
        Assert.Equal(QwenVisionTransformer.KindName, model.Config.VisionEncoder);
        Assert.Equal(4, model.ImageTokens);
        var reference = VisionEncoderFolder.Load(tower).Encoder;
        using var generator = new Generator(14);
        var pixels = randn(new long[] { 2, 3, 28, 28 }, generator: generator);
        using var noGrad = no_grad();
        Assert.Equal(0f, MaxAbsDiff(model.VisionEncoder.Encode(pixels), reference.Encode(pixels)));
        ((nn.Module)reference).Dispose();
    }

    [Fact]
    public void EveryMismatchIsOneMessageNamingTheKeyOrOption()
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var weights = Weights(ProjectionKind.Baseline, hidden: 64, seed: 8);
        var options = (Fixture f) => new DsvcImportOptions { LanguageModelFolder = f.Lm, VisionFolder = f.Vision };

        var noArgs = Write(temp.File("noArgs"), weights, 64, trainArgs: null);
        var e = Assert.Throws<InvalidDataException>(() => DsvcCheckpoint.Load(noArgs.Checkpoint, options(noArgs)));
        Assert.Contains("--attention", e.Message);
        Assert.Contains("train_args.pt", e.Message);

        var wrongProjection = Write(temp.File("wrongProjection"), weights, 64, TrainArgs("vit", mmca: true));
        e = Assert.Throws<InvalidDataException>(() => DsvcCheckpoint.Load(wrongProjection.Checkpoint, options(wrongProjection)));
        Assert.Contains("vis_proj 'vit'", e.Message);

        var missingFolder = Write(temp.File("missingFolder"), weights, 64, TrainArgs("baseline", mmca: true));
        e = Assert.Throws<InvalidDataException>(() => DsvcCheckpoint.Load(missingFolder.Checkpoint, new DsvcImportOptions { VisionFolder = missingFolder.Vision }));
        Assert.Contains("--lm", e.Message);
        Assert.Contains("/data/llama-2-7b-hf", e.Message);

        var noProjection = Write(temp.File("noProjection"), weights, 64, TrainArgs("baseline", mmca: true), keep: name => !name.StartsWith("projection."));
        e = Assert.Throws<InvalidDataException>(() => DsvcCheckpoint.Load(noProjection.Checkpoint, options(noProjection)));
        Assert.Contains("projection.0.weight", e.Message);

        var foreign = new Dictionary<string, Tensor>(weights) { ["pos_embedding.weight"] = zeros(8, 64) };
        var gpt = Write(temp.File("gpt"), foreign, 64, TrainArgs("baseline", mmca: true));
        e = Assert.Throws<InvalidDataException>(() => DsvcCheckpoint.Load(gpt.Checkpoint, options(gpt)));
        Assert.Contains("pos_embedding.weight", e.Message);

        var truncated = new Dictionary<string, Tensor>(weights);
        truncated.Remove("lang_decoder.model.layers.1.mlp.down_proj.weight");
        var partial = Write(temp.File("partial"), truncated, 64, TrainArgs("baseline", mmca: true));
        e = Assert.Throws<InvalidDataException>(() => DsvcCheckpoint.Load(partial.Checkpoint, options(partial)));
        Assert.Contains("lang_decoder.model.layers.1.mlp.down_proj.weight", e.Message);
    }

    [Fact]
    public void VchatImportFromDsvcWritesAModelFolderThatLoads()
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var weights = Weights(ProjectionKind.Baseline, hidden: 64, seed: 12);
        var fixture = Write(temp.Path, weights, 64, TrainArgs("baseline", mmca: true));
        string output = temp.File("model");
        var result = InProcessVchat.Run("import", "--from", "dsvc", fixture.Checkpoint, "--lm", fixture.Lm, "--vision", fixture.Vision, "--out", output);
        Assert.True(result.Code == 0, result.Out + result.Err);
        Assert.Contains("mmca, baseline projection, 17 tokens per image", result.Out);
        using (var model = VisualChatModel.Load(output)) {
            Assert.Equal(AttentionMode.Mmca, model.Config.AttentionMode);
            Assert.Equal(Vocab, model.Tokenizer!.TokenToId("<image>"));
        }

        var bad = InProcessVchat.Run("import", "--from", "dsvc", fixture.Checkpoint, "--lm", fixture.Lm, "--vision", fixture.Vision, "--attention", "cross", "--out", temp.File("bad"));
        Assert.Equal(1, bad.Code);
        Assert.Contains("--attention 'cross'", bad.Err);
        Assert.False(Directory.Exists(temp.File("bad")));
    }
}
