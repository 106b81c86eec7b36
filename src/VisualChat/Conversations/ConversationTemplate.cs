using System.Text;
using VisualChat.Text;
using VisualChat.Vision.Imaging;

namespace VisualChat.Conversations;

/// <summary>Whether a piece of rendered text is prompt (no loss) or answer (loss).</summary>
public enum SegmentRole { Prompt, Answer }

/// <summary>A piece of the rendered conversation text. Each round renders as one prompt segment followed (when the
/// round has an answer) by one answer segment.</summary>
public sealed record TemplateSegment(int RoundIndex, SegmentRole Role, string Text);

/// <summary>Which prompt format a model was trained with.</summary>
public enum PromptStyle
{
    /// <summary>DeepSpeed-VisualChat: "### Image k:", "### Question:", "### Answer:".</summary>
    DeepSpeedVisualChat,
    /// <summary>LLaVA-1.5 (vicuna_v1): "USER: &lt;image&gt;\n… ASSISTANT: …&lt;/s&gt;USER: …".</summary>
    Llava,
}

public sealed record ConversationTemplateOptions
{
    /// <summary>The prompt format; a model folder chooses it (<c>prompt_template</c> in visualchat.json, or LLaVA's own).</summary>
    public PromptStyle Style { get; init; } = PromptStyle.DeepSpeedVisualChat;

    /// <summary>System instruction placed before the first round, followed by a blank line. Null or empty: none.
    /// A conversation's own <see cref="Conversation.System"/> overrides it.</summary>
    public string? SystemPrompt { get; init; } = ConversationTemplate.DefaultSystemPrompt;

    /// <summary>DeepSpeed-VisualChat tokenizes every round on its own, so every round starts with BOS and ends with
    /// EOS; false puts BOS only before the first round.</summary>
    public bool BosEachRound { get; init; } = true;
}

/// <summary>
/// The DeepSpeed-VisualChat prompt template (paper Fig. 3; strings from DeepSpeedExamples
/// applications/DeepSpeed-VisualChat/utils/data/DST.py). Per round:
/// <code>
/// [system + "\n\n" on the first round]
/// "### Image k:\n&lt;image&gt;\n" for each image the round introduces (k counts across the conversation), then "\n"
/// "### Question:\n" + question + "\n\n### Answer:\n"      (prompt)
/// answer                                                   (answer; EOS appended when tokenized)
/// </code>
/// Deliberate deviation: the original inserts the single added token "### Image:" and swaps its id for the ids of
/// "### Image k:" tokenized on its own; here "### Image k:" is ordinary text tokenized in context. The original's
/// <c>DEFAULT_SYSTEM_TOKEN</c> ("### System instuction:") is defined there but never rendered, so it is not rendered here.
/// <para>With <see cref="PromptStyle.Llava"/> it renders LLaVA-1.5's vicuna_v1 format instead (the processor chat template
/// of llava-hf with LLaVA's "&lt;/s&gt;" round separator): per round <c>[system + " " on the first round]</c>
/// <c>"USER: " + "&lt;image&gt;\n" per new image + question + " ASSISTANT:"</c> (prompt) and <c>" " + answer</c> (answer,
/// EOS appended), BOS only before the first round.</para>
/// </summary>
public sealed class ConversationTemplate
{
    public const string DefaultSystemPrompt =
        "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.";
    /// <summary>The original's unused system header, kept for users who want to put it into their system text.</summary>
    public const string OriginalSystemToken = "### System instuction:";
    public const string ImagePlaceholder = "<image>";
    public const string QuestionHeader = "### Question:";
    public const string AnswerHeader = "### Answer:";
    public const string LlavaUser = "USER:", LlavaAssistant = "ASSISTANT:";
    public const int IgnoreLabel = -100;

    public static string ImageHeader(int imageNumber) => $"### Image {imageNumber}:";

    public ConversationTemplateOptions Options { get; }

    public ConversationTemplate(ConversationTemplateOptions? options = null) => Options = options ?? new();

    /// <summary>Renders the conversation as prompt/answer segments. Every round but the last must have an answer;
    /// the last round without an answer renders only its prompt (the inference prompt).</summary>
    public IReadOnlyList<TemplateSegment> RenderSegments(Conversation conversation)
    {
        if (conversation.Rounds.Count == 0)
            throw new ArgumentException($"Conversation from {Sources(conversation)} has no rounds.", nameof(conversation));
        var segments = new List<TemplateSegment>(conversation.Rounds.Count * 2);
        int imageNumber = 0;
        var system = conversation.System ?? Options.SystemPrompt;
        for (int r = 0; r < conversation.Rounds.Count; r++)
        {
            var round = conversation.Rounds[r];
            var prompt = new StringBuilder();
            bool llava = Options.Style == PromptStyle.Llava;
            if (llava) {
                if (r == 0 && !string.IsNullOrEmpty(system)) prompt.Append(system).Append(' ');
                prompt.Append(LlavaUser).Append(' ');
                foreach (var _ in round.NewImages) prompt.Append(ImagePlaceholder).Append('\n');
                prompt.Append(round.Question).Append(' ').Append(LlavaAssistant);
            } else {
                if (r == 0 && !string.IsNullOrEmpty(system)) prompt.Append(system).Append("\n\n");
                foreach (var _ in round.NewImages)
                    prompt.Append(ImageHeader(++imageNumber)).Append('\n').Append(ImagePlaceholder).Append('\n');
                if (round.NewImages.Count > 0) prompt.Append('\n');
                prompt.Append(QuestionHeader).Append('\n').Append(round.Question).Append("\n\n").Append(AnswerHeader).Append('\n');
            }
            segments.Add(new TemplateSegment(r, SegmentRole.Prompt, prompt.ToString()));
            if (round.Answer is not null)
                segments.Add(new TemplateSegment(r, SegmentRole.Answer, llava ? " " + round.Answer : round.Answer));
            else if (r != conversation.Rounds.Count - 1)
                throw new ArgumentException($"Round {r + 1} of the conversation from {Sources(conversation)} has no answer; only the last round may lack one.", nameof(conversation));
        }
        return segments;
    }

    /// <summary>The whole conversation as one string (BOS/EOS are tokens, not text, and do not appear).</summary>
    public string RenderText(Conversation conversation) => string.Concat(RenderSegments(conversation).Select(s => s.Text));

    /// <summary>The inference prompt: the conversation's last round must have no answer. Byte-identical to the
    /// training text up to (and including) that round's "### Answer:\n".</summary>
    public string RenderInferencePrompt(Conversation conversation)
    {
        if (conversation.Rounds.Count == 0 || conversation.Rounds[^1].Answer is not null)
            throw new ArgumentException($"An inference prompt needs a last round without an answer (conversation from {Sources(conversation)}).", nameof(conversation));
        return RenderText(conversation);
    }

    /// <summary>Tokenizes for training: labels are <see cref="IgnoreLabel"/> on prompts and BOS, and the token ids on
    /// answers and each round's closing EOS. Every round must have an answer.</summary>
    public TokenizedSample Tokenize(Conversation conversation, ITokenizer tokenizer)
    {
        if (conversation.Rounds.Any(r => r.Answer is null))
            throw new ArgumentException($"Training samples need an answer in every round (conversation from {Sources(conversation)}).", nameof(conversation));
        return Concatenate(conversation, TokenizeRounds(conversation, tokenizer), tokenizer);
    }

    /// <summary>Tokenizes an inference prompt (last round without answer): the ids equal the training ids of the same
    /// conversation up to the last round's "### Answer:\n".</summary>
    public TokenizedSample TokenizePrompt(Conversation conversation, ITokenizer tokenizer)
    {
        RenderInferencePrompt(conversation); // validates the shape
        return Concatenate(conversation, TokenizeRounds(conversation, tokenizer), tokenizer);
    }

    /// <summary>Token ids and labels per round; round lengths add up to the whole sample's length, which lets
    /// truncation cut at round boundaries without re-tokenizing.</summary>
    public IReadOnlyList<RoundTokens> TokenizeRounds(Conversation conversation, ITokenizer tokenizer)
    {
        var segments = RenderSegments(conversation);
        var rounds = new List<RoundTokens>(conversation.Rounds.Count);
        for (int i = 0; i < segments.Count; i++)
        {
            var prompt = segments[i];
            var answer = i + 1 < segments.Count && segments[i + 1].Role == SegmentRole.Answer && segments[i + 1].RoundIndex == prompt.RoundIndex
                ? segments[++i] : null;
            bool addBos = Options.BosEachRound || prompt.RoundIndex == 0;
            // Like the original, prompt and answer are tokenized together and the prompt length is taken from the
            // prompt tokenized alone; prompts end in "\n" (DSVC) or "ASSISTANT:" before an answer starting with a
            // space (LLaVA), so no token straddles the boundary.
            var promptIds = tokenizer.Encode(prompt.Text, addBos: addBos);
            int[] ids;
            int[] labels;
            if (answer is null)
            {
                ids = promptIds.ToArray();
                labels = Enumerable.Repeat(IgnoreLabel, ids.Length).ToArray();
            }
            else
            {
                var all = tokenizer.Encode(prompt.Text + answer.Text, addBos: addBos);
                ids = new int[all.Count + 1];
                for (int t = 0; t < all.Count; t++) ids[t] = all[t];
                ids[^1] = tokenizer.EosId;
                labels = new int[ids.Length];
                int promptLength = Math.Min(promptIds.Count, all.Count);
                for (int t = 0; t < ids.Length; t++) labels[t] = t < promptLength ? IgnoreLabel : ids[t];
            }
            rounds.Add(new RoundTokens(prompt.RoundIndex, ids, labels, conversation.Rounds[prompt.RoundIndex].NewImages.Count));
        }
        return rounds;
    }

    /// <summary>The id of <see cref="ImagePlaceholder"/>; the tokenizer must have it as an added token.</summary>
    public static int ImageTokenId(ITokenizer tokenizer) =>
        tokenizer.TokenToId(ImagePlaceholder)
        ?? throw new InvalidOperationException($"The tokenizer has no '{ImagePlaceholder}' token; add it as an added token (special token) to the tokenizer before building data.");

    private static TokenizedSample Concatenate(Conversation conversation, IReadOnlyList<RoundTokens> rounds, ITokenizer tokenizer)
    {
        int imageId = ImageTokenId(tokenizer);
        int length = rounds.Sum(r => r.InputIds.Length);
        var ids = new int[length];
        var labels = new int[length];
        int offset = 0;
        foreach (var round in rounds)
        {
            round.InputIds.CopyTo(ids, offset);
            round.Labels.CopyTo(labels, offset);
            offset += round.InputIds.Length;
        }
        var positions = new List<int>();
        for (int i = 0; i < ids.Length; i++)
            if (ids[i] == imageId) positions.Add(i);
        var images = conversation.Images.ToArray();
        if (positions.Count != images.Length)
            throw new InvalidDataException($"Conversation from {Sources(conversation)} has {images.Length} images but its tokens hold {positions.Count} '{ImagePlaceholder}' placeholders; a question or answer text probably contains '{ImagePlaceholder}'.");
        return new TokenizedSample(ids, labels, positions.ToArray(), images, conversation);
    }

    private static string Sources(Conversation c) =>
        c.SourceIds.Count == 0 ? $"data set '{c.DataSetName}'" : string.Join(", ", c.SourceIds.Take(3)) + (c.SourceIds.Count > 3 ? ", …" : "");
}

/// <summary>Tokens of one round (BOS + prompt + answer + EOS).</summary>
public sealed record RoundTokens(int RoundIndex, int[] InputIds, int[] Labels, int ImageCount)
{
    /// <summary>Length once each image placeholder is expanded to <paramref name="imageTokens"/> embeddings.</summary>
    public int ExpandedLength(int imageTokens) => InputIds.Length + ImageCount * (imageTokens - 1);
}
