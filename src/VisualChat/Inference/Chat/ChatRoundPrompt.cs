using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Conversations;

namespace VisualChat.Inference.Chat;

/// <summary>
/// The token ids one new round appends to a conversation's cache, taken from the training template's per-round
/// tokenization so chat and evaluation prompts are byte-identical to training prompts.
/// </summary>
public static class ChatRoundPrompt
{
    /// <summary>Ids of the last round of <paramref name="conversation"/> (which has no answer yet), with an EOS in front
    /// when the previous answer stopped without one (training rounds always end in EOS).</summary>
    public static int[] NextRoundIds(ConversationTemplate template, ITokenizer tokenizer, Conversation conversation, bool previousAnswerLacksEos)
    {
        var ids = template.TokenizeRounds(conversation, tokenizer)[^1].InputIds;
        return previousAnswerLacksEos ? [tokenizer.EosId, .. ids] : ids;
    }

    /// <summary>The preprocessing the model folder asks for, or the encoder's own default.</summary>
    public static ImageProcessorConfig ImageProcessorFor(VisualChatModel model) => model.ImageProcessor
        ?? (model.VisionEncoder is QwenVisionTransformer
            ? ImageProcessorConfig.QwenVL448
            : new ImageProcessorConfig { Size = ImageSize.Shortest(model.VisionEncoder.ImageSize), CropSize = ImageSize.Square(model.VisionEncoder.ImageSize) });

    public static ITokenizer TokenizerOf(VisualChatModel model) => model.Tokenizer
        ?? throw new InvalidOperationException("The model has no tokenizer; its folder needs lm/tokenizer.model or lm/tokenizer.json.");

    /// <summary>Positions a round takes in the cache once each image placeholder became the image's tokens.</summary>
    public static long ExpandedLength(VisualChatModel model, int idCount, int imageCount) =>
        idCount + (long)imageCount * (model.ImageTokens - 1);
}
