using System.Text.Json;
using VisualChat.Conversations;
using VisualChat.Text;

namespace VisualChat.Data;

/// <summary>
/// LLaVA-Instruct-150K. <c>llava</c>: the first question/answer pair of each record in detail_23k.json and
/// complex_reasoning_77k.json; <c>llava_dial</c>: every pair of conversation_58k.json. The image is introduced in the
/// first round; the <c>&lt;image&gt;</c> marker (leading or trailing the first human turn) is removed from the text.
/// </summary>
public sealed class LlavaReader(bool dialogue) : DataSetReader
{
    public static readonly string[] SingleTurnFiles = ["llava/detail_23k.json", "llava/complex_reasoning_77k.json"];
    public static readonly string[] DialogueFiles = ["llava/conversation_58k.json"];
    public const string ImageFolder = "coco/train2017";

    public override string Name => dialogue ? "llava_dial" : "llava";

    public override (int Min, int Max) DefaultConcat => dialogue ? (1, 2) : (1, 3);

    private string[] Files => dialogue ? DialogueFiles : SingleTurnFiles;

    public override IReadOnlyList<string> RequiredPaths(ReadContext context) =>
        [.. Files.Select(f => context.Combine(f)), context.Combine(ImageFolder)];

    public override IEnumerable<Conversation> Read(ReadContext context)
    {
        foreach (var relative in Files)
        {
            var path = context.Combine(relative);
            using var doc = LoadJson(path);
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{path} should hold a JSON array of LLaVA records.");
            int index = 0;
            foreach (var record in doc.RootElement.EnumerateArray())
            {
                var recordId = RecordId(record, index++, "id");
                var source = new SourceId(context.Relative(path), recordId);
                var conversation = Guard(context, source.File, recordId, () =>
                {
                    var parsed = Parse(context, record);
                    var rounds = dialogue ? parsed.Rounds : [parsed.Rounds[0]];
                    return new Conversation(context.DataSetName, rounds, [source]);
                });
                if (conversation is not null) yield return conversation;
            }
        }
    }

    /// <summary>A LLaVA record as rounds (image in the first round) plus its image file name (null: text-only).</summary>
    internal sealed record ParsedRecord(IReadOnlyList<Round> Rounds, string? ImageName);

    internal static ParsedRecord Parse(ReadContext context, JsonElement record)
    {
        var image = OptionalString(record, "image");
        var turns = RequireArray(record, "conversations");
        var pairs = new List<Round>();
        int count = turns.GetArrayLength();
        if (count < 2) throw new RecordSkipException(SkipReason.MalformedRecord, $"'conversations' has {count} turns, expected at least one human/gpt pair");
        int placeholders = 0;
        for (int t = 0; t + 1 < count; t += 2)
        {
            var human = turns[t];
            var gpt = turns[t + 1];
            CheckRole(human, t, "human");
            CheckRole(gpt, t + 1, "gpt");
            var question = RequireString(human, "value");
            var answer = RequireString(gpt, "value");
            int inQuestion = CountPlaceholders(question);
            placeholders += inQuestion + CountPlaceholders(answer);
            if (inQuestion > 0 && t != 0)
                throw new RecordSkipException(SkipReason.PlaceholderMismatch, $"'{ConversationTemplate.ImagePlaceholder}' in turn {t + 1}; LLaVA records introduce their image in the first turn");
            question = StripImageMarker(question);
            var newImages = t == 0 && image is not null
                ? new ImageRef[] { new FileImageRef(context.Combine(ImageFolder, image)) }
                : [];
            pairs.Add(new Round(newImages, question, answer));
        }
        if (count % 2 == 1) CheckRole(turns[count - 1], count - 1, "human");
        int expected = image is null ? 0 : 1;
        if (placeholders != expected)
        {
            throw new RecordSkipException(SkipReason.PlaceholderMismatch,
                $"{placeholders} '{ConversationTemplate.ImagePlaceholder}' markers for {expected} image(s)");
        }

        return new ParsedRecord(pairs, image);
    }

    private static void CheckRole(JsonElement turn, int index, string expected)
    {
        var role = RequireString(turn, "from");
        if (role is not ("human" or "gpt"))
            throw new RecordSkipException(SkipReason.UnknownRole, $"turn {index + 1} has role '{role}'; LLaVA roles are 'human' and 'gpt'");
        if (role != expected)
            throw new RecordSkipException(SkipReason.BadAlternation, $"turn {index + 1} is from '{role}', expected '{expected}'");
    }

    private static int CountPlaceholders(string text)
    {
        int n = 0, at = 0;
        while ((at = text.IndexOf(ConversationTemplate.ImagePlaceholder, at, StringComparison.Ordinal)) >= 0)
        {
            n++;
            at += ConversationTemplate.ImagePlaceholder.Length;
        }
        return n;
    }

    /// <summary>Removes a leading "&lt;image&gt;\n" or trailing "\n&lt;image&gt;" (the template places images).
    /// The original also deletes every other "\n" of the question, gluing lines together; we keep inner newlines.</summary>
    internal static string StripImageMarker(string question)
    {
        const string marker = ConversationTemplate.ImagePlaceholder;
        var q = question.Trim();
        if (q.StartsWith(marker, StringComparison.Ordinal)) q = q[marker.Length..];
        if (q.EndsWith(marker, StringComparison.Ordinal)) q = q[..^marker.Length];
        return q.Trim();
    }
}
