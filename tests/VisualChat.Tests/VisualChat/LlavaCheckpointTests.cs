using System.Text.Json.Nodes;
using TorchSharp;
using VisualChat.Conversations;
using VisualChat.Model;
using VisualChat.Tests.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Projection;
using VisualChat.Weights;
using Xunit;
using static TorchSharp.torch;

namespace VisualChat.Tests.Multimodal;

/// <summary>
/// Tiny LLaVA-1.5 checkpoints in Hugging Face's layouts (config.json with model_type llava, real key names), loaded as
/// VisualChat models and checked against a reference forward written here with plain torch ops.
/// </summary>
public sealed class LlavaCheckpointTests
{
    const int ImageTokenIndex = 301; // the tiny tokenizer's "<image>": right after its 301 base pieces
    const int TextVocab = 320;       // padded like llava-1.5's 32064

    internal static JsonObject Config(int visionFeatureLayer = -2, string strategy = "default", string act = "gelu") => new()
    {
        ["architectures"] = new JsonArray("LlavaForConditionalGeneration"),
        ["model_type"] = "llava",
        ["image_token_index"] = ImageTokenIndex,
        ["vision_feature_layer"] = visionFeatureLayer,
        ["vision_feature_select_strategy"] = strategy,
        ["projector_hidden_act"] = act,
        ["pad_token_id"] = 302,
        ["text_config"] = new JsonObject
        {
            ["model_type"] = "llama", ["vocab_size"] = TextVocab, ["hidden_size"] = 64, ["intermediate_size"] = 128,
            ["num_hidden_layers"] = 2, ["num_attention_heads"] = 4, ["num_key_value_heads"] = 2, ["rms_norm_eps"] = 1e-5,
            ["max_position_embeddings"] = 256, ["torch_dtype"] = "float32",
        },
        ["vision_config"] = new JsonObject
        {
            ["model_type"] = "clip_vision_model", ["hidden_size"] = 32, ["intermediate_size"] = 64, ["num_hidden_layers"] = 3,
            ["num_attention_heads"] = 4, ["image_size"] = 32, ["patch_size"] = 8, ["projection_dim"] = 16, ["hidden_act"] = "quick_gelu",
            ["layer_norm_eps"] = 1e-5,
        },
    };

    /// <summary>Random weights under HF LLaVA names of <paramref name="layout"/> (norm weights near 1).</summary>
    internal static Dictionary<string, Tensor> Weights(JsonObject config, LlavaKeyLayout layout, long seed)
    {
        var text = LlamaConfig.Parse(config["text_config"]!.ToJsonString());
        var vision = ClipVisionConfig.Parse(config["vision_config"]!.ToJsonString());
        using var generator = new Generator((ulong)seed);
        var names = new List<(string Name, long[] Shape)>();
        using (var lm = new LlamaForCausalLM(text, seed: null, initialize: false))
            names.AddRange(lm.state_dict().Select(p => (p.Key.StartsWith("model.") ? layout.LanguageModel + p.Key["model.".Length..] : layout.LmHead + p.Key["lm_head.".Length..], p.Value.shape)));
        using (var clip = new ClipVisionModel(vision))
            names.AddRange(clip.state_dict().Select(p => (layout.Vision + p.Key, p.Value.shape)));
        int v = vision.HiddenSize, h = text.HiddenSize;
        names.Add((layout.Projector + "linear_1.weight", new long[] { h, v }));
        names.Add((layout.Projector + "linear_1.bias", new long[] { h }));
        names.Add((layout.Projector + "linear_2.weight", new long[] { h, h }));
        names.Add((layout.Projector + "linear_2.bias", new long[] { h }));
        var weights = new Dictionary<string, Tensor>();
        foreach (var (name, shape) in names) {
            var noise = randn(shape, generator: generator);
            bool norm = shape.Length == 1 && name.EndsWith(".weight") && (name.Contains("norm") || name.Contains("layrnorm"));
            weights[name] = norm ? noise.mul(0.1).add(1.0) : noise.mul(0.2);
        }
        return weights;
    }

    internal static void WriteFolder(string folder, JsonObject config, Dictionary<string, Tensor> weights, long maxShardBytes = long.MaxValue)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        TensorFiles.SaveSharded(folder, weights, maxShardBytes);
        VisualChatPresets.CreateTinyTokenizer().Save(folder);
    }

    // ---- the reference: LLaVA-1.5 written out with plain torch ops ----

    internal static Tensor Linear(Tensor x, IReadOnlyDictionary<string, Tensor> w, string prefix) =>
        w.TryGetValue(prefix + ".bias", out var bias) ? nn.functional.linear(x, w[prefix + ".weight"], bias) : nn.functional.linear(x, w[prefix + ".weight"]);

    static Tensor LayerNorm(Tensor x, IReadOnlyDictionary<string, Tensor> w, string prefix) =>
        nn.functional.layer_norm(x, new[] { x.shape[^1] }, w[prefix + ".weight"], w[prefix + ".bias"], 1e-5);

    /// <summary>CLIP hidden_states[layer] (0 = embeddings after pre_layrnorm).</summary>
    internal static Tensor ClipHidden(Tensor pixels, IReadOnlyDictionary<string, Tensor> w, string p, int layer, int heads, int patch)
    {
        var patches = nn.functional.conv2d(pixels, w[p + "vision_model.embeddings.patch_embedding.weight"], strides: new long[] { patch, patch });
        patches = patches.flatten(2).transpose(1, 2);                                   // [N, P, D]
        long n = pixels.shape[0], d = patches.shape[2];
        var cls = w[p + "vision_model.embeddings.class_embedding"].reshape(1, 1, d).expand(n, 1, d);
        var x = cat(new[] { cls, patches }, 1) + w[p + "vision_model.embeddings.position_embedding.weight"].unsqueeze(0);
        x = LayerNorm(x, w, p + "vision_model.pre_layrnorm");
        long t = x.shape[1], hd = d / heads;
        for (int i = 0; i < layer; i++) {
            string l = $"{p}vision_model.encoder.layers.{i}.";
            var y = LayerNorm(x, w, l + "layer_norm1");
            Tensor Split(Tensor z) => z.reshape(n, t, heads, hd).transpose(1, 2);
            var q = Split(Linear(y, w, l + "self_attn.q_proj")) * Math.Pow(hd, -0.5);
            var k = Split(Linear(y, w, l + "self_attn.k_proj"));
            var v = Split(Linear(y, w, l + "self_attn.v_proj"));
            var attn = q.matmul(k.transpose(2, 3)).softmax(-1).matmul(v).transpose(1, 2).reshape(n, t, d);
            x = x + Linear(attn, w, l + "self_attn.out_proj");
            var m = Linear(LayerNorm(x, w, l + "layer_norm2"), w, l + "mlp.fc1");
            m = m * (m * 1.702).sigmoid();                                               // quick_gelu
            x = x + Linear(m, w, l + "mlp.fc2");
        }
        return x;
    }

    static Tensor RmsNorm(Tensor x, Tensor weight) => x * (x.pow(2).mean(new long[] { -1 }, keepdim: true) + 1e-5).rsqrt() * weight;

    static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        return cat(new[] { -x.narrow(-1, half, half), x.narrow(-1, 0, half) }, -1);
    }

    /// <summary>LlamaForCausalLM logits for inputs_embeds [1, L, D].</summary>
    internal static Tensor LlamaLogits(Tensor embeds, IReadOnlyDictionary<string, Tensor> w, string m, string head, int heads, int kvHeads, int layers)
    {
        long length = embeds.shape[1], d = embeds.shape[2], hd = d / heads;
        var invFreq = 1.0 / pow(10000.0, arange(0, hd, 2, dtype: float64) / hd);
        var freqs = arange(length, dtype: float64).unsqueeze(1) * invFreq.unsqueeze(0);
        var emb = cat(new[] { freqs, freqs }, -1);
        var cos = emb.cos().to(float32);
        var sin = emb.sin().to(float32);
        var mask = ones(length, length).triu(1).mul(-1e9);
        var x = embeds;
        for (int i = 0; i < layers; i++) {
            string l = $"{m}layers.{i}.";
            var y = RmsNorm(x, w[l + "input_layernorm.weight"]);
            var q = Linear(y, w, l + "self_attn.q_proj").reshape(1, length, heads, hd).transpose(1, 2);
            var k = Linear(y, w, l + "self_attn.k_proj").reshape(1, length, kvHeads, hd).transpose(1, 2);
            var v = Linear(y, w, l + "self_attn.v_proj").reshape(1, length, kvHeads, hd).transpose(1, 2);
            q = q * cos + RotateHalf(q) * sin;
            k = k * cos + RotateHalf(k) * sin;
            k = k.repeat_interleave(heads / kvHeads, 1);
            v = v.repeat_interleave(heads / kvHeads, 1);
            var scores = q.matmul(k.transpose(2, 3)) / Math.Sqrt(hd) + mask;
            var attn = scores.softmax(-1).matmul(v).transpose(1, 2).reshape(1, length, d);
            x = x + Linear(attn, w, l + "self_attn.o_proj");
            var z = RmsNorm(x, w[l + "post_attention_layernorm.weight"]);
            var mlp = Linear(nn.functional.silu(Linear(z, w, l + "mlp.gate_proj")) * Linear(z, w, l + "mlp.up_proj"), w, l + "mlp.down_proj");
            x = x + mlp;
        }
        x = RmsNorm(x, w[m + "norm.weight"]);
        return nn.functional.linear(x, w[head + "weight"]);
    }

    /// <summary>The whole LLaVA forward: features of hidden_states[-2] without CLS → linear_1 → GELU → linear_2, each
    /// placeholder expanded to the image's tokens, then the LM.</summary>
    static Tensor ReferenceLogits(IReadOnlyDictionary<string, Tensor> w, LlavaKeyLayout layout, int[] ids, Tensor pixels, bool dropCls = true, int layer = 2)
    {
        var features = ClipHidden(pixels, w, layout.Vision, layer, heads: 4, patch: 8);
        if (dropCls) features = features.narrow(1, 1, features.shape[1] - 1);
        var projected = Linear(nn.functional.gelu(Linear(features, w, layout.Projector + "linear_1")), w, layout.Projector + "linear_2");
        var table = w[layout.LanguageModel + "embed_tokens.weight"];
        var pieces = new List<Tensor>();
        int image = 0;
        foreach (var id in ids)
            pieces.Add(id == ImageTokenIndex ? projected[image++] : table[id].unsqueeze(0));
        var embeds = cat(pieces, 0).unsqueeze(0);
        return LlamaLogits(embeds, w, layout.LanguageModel, layout.LmHead, heads: 4, kvHeads: 2, layers: 2);
    }

    static float MaxAbsDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    public static IEnumerable<object[]> Layouts() => new[]
    {
        new object[] { "legacy", long.MaxValue },
        new object[] { "transformers452", 40_000L },  // sharded with model.safetensors.index.json
    };

    static LlavaKeyLayout LayoutOf(string name) => name == "legacy" ? LlavaKeyLayout.Legacy : LlavaKeyLayout.Transformers452;

    [Theory]
    [MemberData(nameof(Layouts))]
    public void LoadsBothKeyLayoutsAndMatchesTheReferenceForward(string layoutName, long maxShardBytes)
    {
        var layout = LayoutOf(layoutName);
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var config = Config();
        var weights = Weights(config, layout, seed: 3);
        WriteFolder(temp.Path, config, weights, maxShardBytes);
        if (maxShardBytes != long.MaxValue) Assert.True(File.Exists(temp.File("model.safetensors.index.json")));

        using var model = VisualChatModel.Load(temp.Path);
        Assert.Equal(AttentionMode.Causal, model.Config.AttentionMode);
        Assert.Equal(ProjectionKind.Mlp2xGelu, model.Projection.Kind);
        Assert.Equal(16, model.ImageTokens);   // 4×4 patches, CLS dropped
        Assert.Equal(PromptStyle.Llava, model.Config.TemplateOptions.Style);

        using var generator = new Generator(9);
        var pixels = randn(new long[] { 2, 3, 32, 32 }, generator: generator);
        int[] ids = [1, 33, 40, ImageTokenIndex, 50, 61, ImageTokenIndex, 70, 80];
        var expected = ReferenceLogits(weights, layout, ids, pixels);
        using var noGrad = no_grad();
        var output = model.forward(new VisualChatBatch(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0), null, null, [2], pixels));
        long length = ids.Length + 2 * 15;
        Assert.Equal(length, expected.shape[1]);
        var actual = output.Logits.narrow(1, 0, length);
        Assert.True(MaxAbsDiff(actual, expected) < 1e-4, $"max |Δ| = {MaxAbsDiff(actual, expected)}");
    }

    [Fact]
    public void FullStrategyAndLastLayerKeepClsAndUseTheLastHiddenState()
    {
        var layout = LlavaKeyLayout.Legacy;
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var config = Config(visionFeatureLayer: -1, strategy: "full");
        var weights = Weights(config, layout, seed: 4);
        WriteFolder(temp.Path, config, weights);
        using var model = VisualChatModel.Load(temp.Path);
        Assert.Equal(17, model.ImageTokens);
        using var generator = new Generator(10);
        var pixels = randn(new long[] { 1, 3, 32, 32 }, generator: generator);
        int[] ids = [1, ImageTokenIndex, 44, 45];
        var expected = ReferenceLogits(weights, layout, ids, pixels, dropCls: false, layer: 3);
        using var noGrad = no_grad();
        var output = model.forward(new VisualChatBatch(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0), null, null, [1], pixels));
        Assert.True(MaxAbsDiff(output.Logits.narrow(1, 0, expected.shape[1]), expected) < 1e-4);
    }

    /// <summary>LLaVA folder (transformers ≥ 4.52 names) → <c>vchat import</c>'s VisualChat folder → <c>vchat export
    /// --format llava-hf</c>: each step reloads to the reference forward, and the export is the legacy LLaVA layout
    /// that transformers and vLLM read (the same tensors under the same names as a legacy checkpoint of these weights).</summary>
    [Theory]
    [InlineData("float32", 1e-4)]
    [InlineData("bfloat16", 0.15)]
    public void ImportThenExportRoundTripsTheForwardAndTheLlavaLayout(string dtypeName, double tolerance)
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var config = Config();
        var weights = Weights(config, LlavaKeyLayout.Transformers452, seed: 11);
        string source = temp.File("llava"), imported = temp.File("imported"), exported = temp.File("exported");
        WriteFolder(source, config, weights);

        using (var model = VisualChatModel.Load(source)) model.Save(imported);
        using (var model = VisualChatModel.Load(imported)) {
            Assert.Null(LlavaExport.WhyNot(model));
            LlavaExport.Write(model, exported, DevicePolicy.ParseDType(dtypeName), maxShardBytes: 30_000);
        }

        var written = JsonNode.Parse(File.ReadAllText(Path.Combine(exported, "config.json")))!;
        Assert.Equal("llava", (string?)written["model_type"]);
        Assert.Equal(ImageTokenIndex, (int)written["image_token_index"]!);
        Assert.Equal(-2, (int)written["vision_feature_layer"]!);
        Assert.Equal("default", (string?)written["vision_feature_select_strategy"]);
        Assert.Equal(dtypeName, (string?)written["torch_dtype"]);
        Assert.True(File.Exists(Path.Combine(exported, "model.safetensors.index.json")));   // sharded at 30 kB
        using (var source2 = TensorFiles.Open(exported)) {
            var legacyNames = weights.Keys.Select(name => LegacyName(name)).OrderBy(n => n, StringComparer.Ordinal);
            Assert.Equal(legacyNames, source2.Entries.Select(e => e.Name).OrderBy(n => n, StringComparer.Ordinal));
            var embed = source2.Read("language_model.model.embed_tokens.weight", ScalarType.Float32);
            Assert.Equal(new long[] { TextVocab, 64 }, embed.shape);
        }

        if (dtypeName == "float32") {
            // export → import gives identical tensors
            using var before = VisualChatModel.Load(imported);
            using var after = VisualChatModel.Load(exported);
            var expectedTensors = before.state_dict();
            var actualTensors = after.state_dict();
            Assert.Equal(expectedTensors.Keys.Order(), actualTensors.Keys.Order());
            foreach (var (name, tensor) in expectedTensors)
                Assert.True(tensor.shape.SequenceEqual(actualTensors[name].shape) && tensor.eq(actualTensors[name]).all().item<bool>(), $"{name} changed in the round trip");
        }

        using var generator = new Generator(12);
        var pixels = randn(new long[] { 2, 3, 32, 32 }, generator: generator);
        int[] ids = [1, 33, ImageTokenIndex, 50, 61, ImageTokenIndex, 70];
        var expected = ReferenceLogits(weights, LlavaKeyLayout.Transformers452, ids, pixels);
        using var noGrad = no_grad();
        foreach (var folder in new[] { imported, exported }) {
            using var model = VisualChatModel.Load(folder);
            var output = model.forward(new VisualChatBatch(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0), null, null, [2], pixels));
            var actual = output.Logits.narrow(1, 0, expected.shape[1]).to(ScalarType.Float32);
            // bf16 storage rounds every weight to 8 bits of mantissa: logits of magnitude ~5 move by ~0.05.
            Assert.True(MaxAbsDiff(actual, expected) < tolerance, $"{Path.GetFileName(folder)}: max |Δ| = {MaxAbsDiff(actual, expected)}");
        }
    }

    static string LegacyName(string transformers452Name)
    {
        var from = LlavaKeyLayout.Transformers452;
        var to = LlavaKeyLayout.Legacy;
        foreach (var (a, b) in new[] { (from.LanguageModel, to.LanguageModel), (from.LmHead, to.LmHead), (from.Vision, to.Vision), (from.Projector, to.Projector) })
            if (transformers452Name.StartsWith(a, StringComparison.Ordinal)) return b + transformers452Name[a.Length..];
        throw new InvalidOperationException(transformers452Name);
    }

    [Fact]
    public void ExportRefusesWhatLlavaCannotExpressAndNamesIt()
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        using (var baseline = VisualChatPresets.Create(VisualChatPresets.Tiny, 3, AttentionMode.Causal)) {
            var error = Assert.Throws<InvalidOperationException>(() => LlavaExport.Write(baseline, temp.File("out1")));
            Assert.Contains("projection is \"baseline\"", error.Message);
        }
        // A LLaVA model switched to MMCA (a hand edit of the imported folder's visualchat.json) cannot go back.
        var config = Config();
        WriteFolder(temp.File("llava"), config, Weights(config, LlavaKeyLayout.Legacy, seed: 13));
        using (var model = VisualChatModel.Load(temp.File("llava"))) model.Save(temp.File("imported"));
        var configFile = Path.Combine(temp.File("imported"), "visualchat.json");
        var json = JsonNode.Parse(File.ReadAllText(configFile))!;
        json["attention_mode"] = "mmca";
        File.WriteAllText(configFile, json.ToJsonString());
        using (var mmca = VisualChatModel.Load(temp.File("imported"))) {
            var error = Assert.Throws<InvalidOperationException>(() => LlavaExport.Write(mmca, temp.File("out2")));
            Assert.Contains("attention_mode is \"mmca\"", error.Message);
        }
        Assert.False(Directory.Exists(temp.File("out1")));
        Assert.False(Directory.Exists(temp.File("out2")));
    }

    [Fact]
    public void TwoRoundPromptIsLlavasUserAssistantFormat()
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var config = Config();
        WriteFolder(temp.Path, config, Weights(config, LlavaKeyLayout.Legacy, seed: 5));
        var processor = VisualChatProcessor.Load(temp.Path);
        var conversation = new Conversation("test", [
            new Round([new FileImageRef("a.png")], "what is this", "a red cat"),
            new Round([], "and the dog", "blue"),
        ], [new SourceId("t", "0")]);
        Assert.Equal("USER: <image>\nwhat is this ASSISTANT: a red cat" + "USER: and the dog ASSISTANT: blue",
            processor.Template.RenderText(conversation));
        var sample = processor.Template.Tokenize(conversation, processor.Tokenizer);
        var tokenizer = processor.Tokenizer;
        // "USER: <image>\n… ASSISTANT: …</s>USER: … ASSISTANT: …</s>" tokenized as the legacy HF tokenizer does: BOS once,
        // "</s>" as EOS, the text after it a new segment.
        int[] expected = [
            .. tokenizer.Encode("USER: <image>\nwhat is this ASSISTANT: a red cat", addBos: true), tokenizer.EosId,
            .. tokenizer.Encode("USER: and the dog ASSISTANT: blue"), tokenizer.EosId,
        ];
        Assert.Equal(expected, sample.InputIds);
        Assert.Equal(ImageTokenIndex, sample.InputIds[sample.ImagePositions[0]]);
        // Loss on the answers and their EOS only.
        var answerIds = sample.InputIds.Where((_, i) => sample.Labels[i] != ConversationTemplate.IgnoreLabel).ToArray();
        int firstEos = Array.IndexOf(answerIds, tokenizer.EosId);
        Assert.Equal("a red cat", tokenizer.Decode(answerIds[..firstEos]).Replace('▁', ' ').Trim());
        Assert.Equal("blue", tokenizer.Decode(answerIds[(firstEos + 1)..^1]).Replace('▁', ' ').Trim());
        Assert.Equal(tokenizer.EosId, answerIds[^1]);
        // The inference prompt ends in "ASSISTANT:" and is the training text's prefix.
        var prompt = processor.Template.RenderInferencePrompt(conversation with { Rounds = [conversation.Rounds[0] with { Answer = null }] });
        Assert.Equal("USER: <image>\nwhat is this ASSISTANT:", prompt);
        Assert.EndsWith(" ASSISTANT:", prompt);
    }

    [Theory]
    [InlineData("vision_feature_layer", "7", "vision_feature_layer 7 is out of range")]
    [InlineData("vision_feature_layer", "-3", "vision_feature_layer -3 (hidden_states[1]) is not supported")]
    [InlineData("projector_hidden_act", "\"relu\"", "projector_hidden_act 'relu'")]
    [InlineData("vision_feature_select_strategy", "\"cls\"", "vision_feature_select_strategy 'cls'")]
    [InlineData("image_token_index", "400", "image_token_index 400 is outside text_config.vocab_size 320")]
    public void ConfigMismatchesNameTheKey(string key, string value, string message)
    {
        using var temp = new TempFolder();
        var config = Config();
        config[key] = JsonNode.Parse(value);
        File.WriteAllText(temp.File("config.json"), config.ToJsonString());
        var error = Assert.Throws<InvalidDataException>(() => VisualChatModel.Load(temp.Path));
        Assert.Contains(message, error.Message);
        Assert.Contains("config.json", error.Message);
    }

    [Fact]
    public void MissingTensorIsNamed()
    {
        using var temp = new TempFolder();
        using var scope = NewDisposeScope();
        var config = Config();
        var weights = Weights(config, LlavaKeyLayout.Transformers452, seed: 6);
        weights.Remove("model.language_model.layers.1.mlp.up_proj.weight");
        WriteFolder(temp.Path, config, weights);
        var error = Assert.Throws<InvalidDataException>(() => VisualChatModel.Load(temp.Path));
        Assert.Contains("model.language_model.layers.1.mlp.up_proj.weight", error.Message);
        Assert.Contains("transformers ≥ 4.52", error.Message);
    }
}
