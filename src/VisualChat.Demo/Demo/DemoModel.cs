using VisualChat.Conversations;
using VisualChat.Data.Synthetic;
using VisualChat.Inference.Chat;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>One round of the scripted chat: the images attached before it, the question, the model's and the true answer.</summary>
public sealed record DemoChatRound(IReadOnlyList<string> Images, string Question, string Answer, string Expected)
{
    public bool Correct => Answer == Expected;
}

/// <summary>
/// Turns the demo's trained parts into the project's <see cref="VisualChatModel"/> (model folder, <c>vchat chat</c>)
/// and plays a scripted multi-image chat on the saved folder through <see cref="ChatSession"/>.
/// </summary>
public static class DemoModel
{
    /// <summary>
    /// Assembles the VisualChatModel the DSVC stage starts from (MMCA, perceiver projection freshly initialised from the
    /// recipe's seed) around the pretrained LM and the frozen encoder. The demo LM's vocabulary includes &lt;image&gt;
    /// as its last id; the model folder keeps the LM head at the text vocabulary and &lt;image&gt; as the one added
    /// embedding row, so the LM is rebuilt without that row (its logit was never a target) and the full pretrained
    /// matrix becomes the grown embedding. The model takes ownership of <paramref name="encoder"/>.
    /// </summary>
    public static VisualChatModel Assemble(DemoRecipe recipe, LlamaForCausalLM lm, ClipVisionModel encoder, SentencePieceTokenizer tokenizer)
    {
        int imageId = ConversationTemplate.ImageTokenId(tokenizer);
        if (imageId != lm.Config.VocabSize - 1)
            throw new InvalidOperationException($"The demo tokenizer's '{ConversationTemplate.ImagePlaceholder}' is id {imageId}; the model folder needs it last (id {lm.Config.VocabSize - 1}).");
        using var noGrad = no_grad();
        var textLm = new LlamaForCausalLM(LanguagePretraining.Config(recipe, imageId), seed: recipe.Seed + 41);
        var source = lm.state_dict();
        foreach (var (name, target) in textLm.state_dict())
            target.copy_(source[name].narrow(0, 0, target.shape[0]));
        var model = new VisualChatModel(Config(recipe, AttentionMode.Mmca, imageId, encoder.Config), textLm, encoder, seed: recipe.Seed + 42)
        {
            Tokenizer = tokenizer,
            ImageProcessor = ImageProcessor(recipe),
        };
        model.lm.model.embed_tokens.weight!.copy_(lm.model.embed_tokens.weight!);
        return model;
    }

    /// <summary>Preprocessing of a demo model folder: the images are written at the encoder's size, already box-filtered
    /// like the pretraining pixels, so only the [0, 255] → [-1, 1] normalisation remains.</summary>
    public static ImageProcessorConfig ImageProcessor(DemoRecipe recipe) => new()
    {
        DoResize = false, DoCenterCrop = false, Size = ImageSize.Shortest(recipe.ImageSize),
        CropSize = ImageSize.Square(recipe.ImageSize), ImageMean = [0.5f, 0.5f, 0.5f], ImageStd = [0.5f, 0.5f, 0.5f],
    };

    /// <summary>The perceiver's query grid: <see cref="DemoRecipe.ImageTokens"/> = grid².</summary>
    public static int GridSize(DemoRecipe recipe) => recipe.ImageTokens switch
    {
        1 => 1,
        4 => 2,
        _ => throw new ArgumentException($"DemoRecipe.ImageTokens is {recipe.ImageTokens}; the demo supports 1 or 4 tokens per image."),
    };

    /// <summary>The VisualChat config of a demo-recipe model: perceiver projection with the recipe's image tokens, the
    /// demo LM's text vocabulary with &lt;image&gt; as the one added id.</summary>
    public static VisualChatConfig Config(DemoRecipe recipe, AttentionMode mode, int imageId, ClipVisionConfig encoder) => new()
    {
        AttentionModeName = VisualChatConfig.AttentionModeToName(mode), Projection = "perceiver",
        PerceiverGridSize = GridSize(recipe), PerceiverHeads = recipe.LmHeads,
        LmVocabSize = imageId, ImageTokenId = imageId, SystemPrompt = recipe.SystemPrompt, ClipVision = encoder,
    };

    /// <summary>RGB bytes of <paramref name="scene"/> at the encoder's size: the 64-px render box-filtered, as in training.</summary>
    public static byte[] RenderAt(ShapeScene scene, int imageSize) => scene.Render(imageSize, DemoImages.CanvasSize / imageSize);

    /// <summary>A held-out conversation with new images in its first two rounds and at least three rounds.</summary>
    public static ShapesConversation ScriptFor(int seed)
    {
        var generator = new ShapesConversationGenerator(seed);
        for (int i = 0; ; i++)
        {
            var conversation = generator.Generate(i);
            if (conversation.Rounds.Count >= 3 && conversation.Rounds[0].NewImages.Count > 0 && conversation.Rounds[1].NewImages.Count > 0)
                return conversation;
        }
    }

    /// <summary>Writes the script's images as PNGs into <paramref name="imageFolder"/>, asks its first three rounds
    /// through a <see cref="ChatSession"/> on <paramref name="model"/> (greedy) and returns what was said.</summary>
    public static IReadOnlyList<DemoChatRound> PlayChat(VisualChatModel model, ShapesConversation script, int imageSize, string imageFolder)
    {
        Directory.CreateDirectory(imageFolder);
        using var session = new ChatSession(model, "demo");
        var played = new List<DemoChatRound>();
        int number = 0;
        foreach (var round in script.Rounds.Take(3))
        {
            var images = new List<string>();
            foreach (var scene in round.NewImages)
            {
                var path = Path.Combine(imageFolder, $"image{++number}.png");
                File.WriteAllBytes(path, PngEncoder.EncodeRgb(RenderAt(scene, imageSize), imageSize, imageSize));
                session.AddImage(path);
                images.Add($"{Path.GetFileName(path)} ({scene.Count} {ShapeScene.Name(scene.Color)} {ShapeScene.Name(scene.Kind)})");
            }
            var answer = session.Ask(round.Question).Trim();
            played.Add(new DemoChatRound(images, round.Question, answer, round.Answer));
        }
        return played;
    }
}
