using System.Text.Json.Nodes;
using VisualChat.Conversations;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// What turns a conversation into model input, kept apart from the model as Hugging Face processors are
/// (<c>LlavaProcessor</c>): the tokenizer, the conversation template and the image preprocessing. A round (text with
/// its new images) becomes prompt ids with one placeholder per image and the images' pixel tensor. Chat, evaluation
/// and <c>IChatClient</c> build their prompts only through it, so their prompts equal the training template's.
/// </summary>
public sealed class VisualChatProcessor
{
    public VisualChatProcessor(ITokenizer tokenizer, ImageProcessorConfig imageProcessor, ConversationTemplateOptions templateOptions)
    {
        Tokenizer = tokenizer;
        ImageProcessorConfig = imageProcessor;
        ImageProcessor = new ClipImageProcessor(imageProcessor);
        TemplateOptions = templateOptions;
        Template = new ConversationTemplate(templateOptions);
    }

    public ITokenizer Tokenizer { get; }
    public ImageProcessorConfig ImageProcessorConfig { get; }
    public ClipImageProcessor ImageProcessor { get; }
    public ConversationTemplateOptions TemplateOptions { get; }
    public ConversationTemplate Template { get; }

    /// <summary>Loads the processor of a model folder (see <see cref="VisualChatModel.Load"/>): the tokenizer of lm/,
    /// the template settings of visualchat.json and vision/preprocessor_config.json (or the encoder's default
    /// preprocessing for its image_size).</summary>
    public static VisualChatProcessor Load(string folder)
    {
        if (LlavaCheckpoint.IsLlavaFolder(folder)) return LlavaCheckpoint.LoadProcessor(folder);
        string configPath = Path.Combine(folder, VisualChatConfig.FileName);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{configPath} is missing; a VisualChat model folder starts with {VisualChatConfig.FileName}.", configPath);
        var config = VisualChatConfig.Load(configPath);
        string lmFolder = Path.Combine(folder, VisualChatModel.LmFolder), visionFolder = Path.Combine(folder, VisualChatModel.VisionFolder);
        var tokenizer = TokenizerFactory.FromFolder(lmFolder);
        CheckImageToken(tokenizer, config, lmFolder);
        string visionConfig = Path.Combine(visionFolder, "config.json");
        var imageProcessor = File.Exists(Path.Combine(visionFolder, VisualChatModel.PreprocessorFile))
            ? VisionEncoderFolder.LoadProcessor(visionFolder, ImageSizeOf(visionConfig))
            : ImageProcessorConfig.ForImageSize(ImageSizeOf(visionConfig));
        return new VisualChatProcessor(tokenizer, imageProcessor, config.TemplateOptions);
    }

    /// <summary>The processor of a model in memory: its tokenizer, its folder's preprocessing or its encoder's default,
    /// and its template settings.</summary>
    public static VisualChatProcessor From(VisualChatModel model) => new(
        model.Tokenizer ?? throw new InvalidOperationException("The model has no tokenizer; its folder needs lm/tokenizer.model or lm/tokenizer.json (or set VisualChatModel.Tokenizer)."),
        model.ImageProcessor ?? model.VisionEncoder.DefaultImageProcessor,
        model.Config.TemplateOptions);

    /// <summary>The ids one new round appends to a conversation's cache: the template's tokenization of the last round
    /// of <paramref name="conversation"/> (which has no answer yet), with an EOS in front when the previous answer
    /// stopped without one (training rounds always end in EOS). <paramref name="systemPrompt"/> replaces the template's.</summary>
    public int[] RoundIds(Conversation conversation, bool previousAnswerLacksEos, string? systemPrompt = null)
    {
        var template = systemPrompt is null ? Template : new ConversationTemplate(TemplateOptions with { SystemPrompt = systemPrompt });
        var ids = template.TokenizeRounds(conversation, Tokenizer)[^1].InputIds;
        return previousAnswerLacksEos ? [Tokenizer.EosId, .. ids] : ids;
    }

    /// <summary>[n, 3, S, S] pixels for a round's new images, or null when it has none.</summary>
    public Tensor? Pixels(IReadOnlyList<RgbImage> images) => images.Count > 0 ? ImageProcessor.Preprocess(images) : null;

    /// <summary>The prompt of a round: its ids (see <see cref="RoundIds"/>) and the pixels of its new images (the caller disposes them).</summary>
    public DecoderPrompt ProcessRound(Conversation conversation, IReadOnlyList<RgbImage> newImages, bool previousAnswerLacksEos, string? systemPrompt = null)
    {
        var ids = RoundIds(conversation, previousAnswerLacksEos, systemPrompt);
        return new DecoderPrompt(ids, Pixels(newImages));
    }

    /// <summary>The tokenizer must give the configured image token the configured id.</summary>
    public static void CheckImageToken(ITokenizer tokenizer, VisualChatConfig config, string tokenizerFolder)
    {
        if (tokenizer.TokenToId(config.ImageToken) is not { } id || id != config.ImageTokenId)
            throw new InvalidDataException($"{tokenizerFolder}: the tokenizer's '{config.ImageToken}' id is {tokenizer.TokenToId(config.ImageToken)?.ToString() ?? "missing"} but {VisualChatConfig.FileName} says image_token_id {config.ImageTokenId}.");
    }

    static int ImageSizeOf(string visionConfig)
    {
        if (!File.Exists(visionConfig)) throw new FileNotFoundException($"The VisualChat model folder lacks {visionConfig}; see docs/model-folder.md for its layout.", visionConfig);
        var root = JsonNode.Parse(File.ReadAllText(visionConfig));
        foreach (var node in new[] { root, root?["vision_config"], root?["visual"] })
            if (node?["image_size"] is JsonValue value && value.TryGetValue<int>(out var size) && size > 0) return size;
        throw new InvalidDataException($"{visionConfig} has no image_size (top level, vision_config or visual); the processor needs it when vision/{VisualChatModel.PreprocessorFile} is missing.");
    }
}
