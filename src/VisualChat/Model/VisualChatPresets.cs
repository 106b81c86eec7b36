using System.Text.Json.Nodes;
using VisualChat.Conversations;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;

namespace VisualChat.Model;

/// <summary>Sizes of a preset, computed from configs alone (nothing is allocated). Bytes are for bf16 storage.</summary>
public sealed record VisualChatPresetDescription(
    string Name, string Summary, long TotalParameters, long TrainableParameters, long VisionParameters, long ProjectionParameters,
    long LanguageModelParameters, int ImageTokens, long StorageBytes);

/// <summary>
/// Named model shapes. <c>tiny</c> is buildable (CPU unit tests, smoke runs): tiny CLIP encoder, 2-layer LLaMA of
/// width 64 with a small byte-fallback BPE tokenizer plus "&lt;image&gt;", baseline projection, mmca. The others are
/// DeepSpeed-VisualChat's published shapes, described only (build them from real checkpoints).
/// </summary>
public static class VisualChatPresets
{
    public const string Tiny = "tiny", ClipL14Llama2_7B = "clip-l14-llama2-7b", Qwen448Llama2_13B = "qwen448-llama2-13b", Qwen448Llama2_70B = "qwen448-llama2-70b";

    public static IReadOnlyList<string> Names { get; } = [Tiny, ClipL14Llama2_7B, Qwen448Llama2_13B, Qwen448Llama2_70B];

    /// <summary>Pieces of the tiny tokenizer after its byte pieces, in merge priority.</summary>
    static readonly string[] TinyPieces =
    [
        "▁t", "he", "▁the", "▁a", "in", "er", "an", "on", "▁w", "re", "is", "at", "or", "en", "▁i", "es",
        "##", "###", "▁###", "Im", "age", "Image", "▁Image", "Qu", "est", "ion", "Question", "An", "sw", "Answer",
        "▁is", "▁an", "▁in", "▁what", "▁color", "▁red", "▁blue", "▁cat", "▁dog", "▁of", "▁and", "▁this",
    ];

    public static VisualChatPresetDescription Describe(string name)
    {
        var (summary, lm, vision, visionTokens, visionWidth) = Shapes(name);
        long lmParameters = lm.ParameterCount() + lm.HiddenSize;   // + the added image-token row
        long projection = (long)visionWidth * lm.HiddenSize + lm.HiddenSize + 2L * lm.HiddenSize;
        long embeddings = (long)(lm.VocabSize + 1) * lm.HiddenSize;
        long total = vision + projection + lmParameters;
        return new VisualChatPresetDescription(name, summary, total, projection + embeddings, vision, projection, lmParameters, visionTokens, total * 2);
    }

    /// <summary>Builds a preset (only <c>tiny</c> can be built from nothing) with its tokenizer attached.</summary>
    public static VisualChatModel Create(string name, long seed = 0, AttentionMode? attentionMode = null)
    {
        if (name != Tiny)
            throw new ArgumentException($"Preset '{name}' is shapes-only; load its weights from a model folder. Buildable presets: {Tiny}.", nameof(name));
        var tokenizer = CreateTinyTokenizer();
        var lmConfig = TinyLlamaConfig(tokenizer.BaseVocabSize);
        var config = new VisualChatConfig {
            AttentionModeName = VisualChatConfig.AttentionModeToName(attentionMode ?? AttentionMode.Mmca),
            Projection = "baseline",
            VisionEncoder = "clip",
            ClipVision = ClipVisionConfig.Tiny(),
            LmVocabSize = tokenizer.BaseVocabSize,
            ImageTokenId = ConversationTemplate.ImageTokenId(tokenizer),
            SystemPrompt = null,
        };
        return new VisualChatModel(config, lmConfig, seed) { Tokenizer = tokenizer };
    }

    /// <summary>Byte-fallback BPE (3 specials + 256 bytes + a few merges) with "&lt;image&gt;" added right after.</summary>
    public static SentencePieceTokenizer CreateTinyTokenizer()
    {
        var tokenizer = SentencePieceTokenizer.FromModel(SentencePieceModelBuilder.CreateByteFallbackBpe(TinyPieces), "tiny preset tokenizer");
        tokenizer.AddSpecialTokens([ConversationTemplate.ImagePlaceholder]);
        return tokenizer;
    }

    static LlamaConfig TinyLlamaConfig(int vocabSize) => new() {
        VocabSize = vocabSize, HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
        MaxPositionEmbeddings = 1024, RmsNormEps = 1e-6, TieWordEmbeddings = false, BosTokenId = 1, EosTokenId = JsonValue.Create(2),
    };

    static LlamaConfig Llama2(int hidden, int intermediate, int layers, int heads, int? kvHeads) => new() {
        VocabSize = 32000, HiddenSize = hidden, IntermediateSize = intermediate, NumHiddenLayers = layers, NumAttentionHeads = heads,
        NumKeyValueHeads = kvHeads, MaxPositionEmbeddings = 4096, RmsNormEps = 1e-5, TorchDtype = "bfloat16",
    };

    static (string Summary, LlamaConfig Lm, long VisionParameters, int VisionTokens, int VisionWidth) Shapes(string name) => name switch
    {
        Tiny => ("tiny CLIP (32 px, 17 tokens × 32) + baseline projection + 2-layer LLaMA (64 wide), mmca",
            TinyLlamaConfig(SentencePieceModelBuilder.ReservedCount + TinyPieces.Length), ClipParameters(ClipVisionConfig.Tiny()), ClipVisionConfig.Tiny().NumPositions, 32),
        ClipL14Llama2_7B => ("CLIP ViT-L/14 224 px (257 tokens) + baseline projection + LLaMA-2 7B",
            Llama2(4096, 11008, 32, 32, null), ClipParameters(ClipVisionConfig.ClipVitLargePatch14()), 257, 1024),
        Qwen448Llama2_13B => ("Qwen-VL visual encoder 448 px (256 tokens) + baseline projection + LLaMA-2 13B (DSVC 2B+13B)",
            Llama2(5120, 13824, 40, 40, null), QwenParameters(QwenVisionConfig.DeepSpeedVisualChat()), 256, QwenVisionConfig.DeepSpeedVisualChat().OutputDim),
        Qwen448Llama2_70B => ("Qwen-VL visual encoder 448 px (256 tokens) + baseline projection + LLaMA-2 70B (DSVC 2B+70B)",
            Llama2(8192, 28672, 80, 64, 8), QwenParameters(QwenVisionConfig.DeepSpeedVisualChat()), 256, QwenVisionConfig.DeepSpeedVisualChat().OutputDim),
        _ => throw new ArgumentException($"Unknown VisualChat preset '{name}'; known: {string.Join(", ", Names)}.", nameof(name)),
    };

    /// <summary>HF CLIPVisionModel parameter count.</summary>
    public static long ClipParameters(ClipVisionConfig c)
    {
        long h = c.HiddenSize, i = c.IntermediateSize;
        long embeddings = h + (long)c.NumChannels * c.PatchSize * c.PatchSize * h + (long)c.NumPositions * h;
        long layer = 4 * (h * h + h) + 4 * h + h * i + i + i * h + h;
        return embeddings + 2 * h + c.NumHiddenLayers * layer + 2 * h;
    }

    /// <summary>Qwen-VL visual transformer parameter count (its state dict, the fixed resampler table included).</summary>
    public static long QwenParameters(QwenVisionConfig c)
    {
        long w = c.Width, m = c.MlpSize, o = c.OutputDim, q = c.NQueries;
        long stem = 3L * c.PatchSize * c.PatchSize * w + (long)c.PositionalEmbeddingSize * w + 2 * w;
        long layer = 2 * w + 3 * w * w + 3 * w + w * w + w + 2 * w + w * m + m + m * w + w;
        long resampler = 2 * q * o + (w != o ? w * o : 0) + 4 * o * o + 4 * o + 4 * o;
        return stem + c.Layers * layer + resampler + 2 * o + (c.UseOutputProjection ? o * o : 0);
    }
}
