using System.Text.Json;
using System.Text.RegularExpressions;
using VisualChat.Conversations;

namespace VisualChat.Data;

/// <summary>
/// SparklesDialogue (CC and VG): user/assistant dialogues whose user turns introduce images. <c>IMAGE#id</c>
/// references become the image's ordinal in the conversation in one of three styles chosen per dialogue under the seed
/// ("image a", "image A", "the first image", as the original); <c>&lt;Img&gt;&lt;ImageHere&gt;&lt;/Img&gt;</c> markers are
/// dropped. Deviation: the original capitalizes every sentence-initial word with Python's capitalize() (lowercasing the
/// rest of the word); we only capitalize a substituted reference that starts a sentence.
/// </summary>
public sealed partial class SparklesDialogueReader : DataSetReader
{
    public const string ImageMarker = "<Img><ImageHere></Img>";
    public static readonly string[] Subsets = ["SparklesDialogueCC", "SparklesDialogueVG"];

    public override string Name => "sparkles_dialogue";

    public static string AnnotationFile(string subset) => $"{subset}/annotations/{subset}.json";
    public static string ImageFolder(string subset) => $"{subset}/images";

    public override IReadOnlyList<string> RequiredPaths(ReadContext c) =>
        [.. Subsets.SelectMany(s => new[] { c.Combine(AnnotationFile(s)), c.Combine(ImageFolder(s)) })];

    private static readonly string[][] TagStyles =
    [
        ["image a", "image b", "image c", "image d", "image e", "image f", "image g", "image h"],
        ["image A", "image B", "image C", "image D", "image E", "image F", "image G", "image H"],
        ["the first image", "the second image", "the third image", "the fourth image",
         "the fifth image", "the sixth image", "the seventh image", "the eighth image"],
    ];

    [GeneratedRegex(@"\s*<Img><ImageHere></Img>")]
    private static partial Regex MarkerWithSpace();

    [GeneratedRegex(@"IMAGE#([A-Za-z0-9_\-]+)")]
    private static partial Regex ImageReference();

    public override IEnumerable<Conversation> Read(ReadContext context)
    {
        foreach (var subset in Subsets)
        {
            var path = context.Combine(AnnotationFile(subset));
            using var doc = LoadJson(path);
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{path} should hold a JSON array of dialogues.");
            var file = context.Relative(path);
            int index = 0;
            foreach (var record in doc.RootElement.EnumerateArray())
            {
                var id = RecordId(record, index++, "id", "dialogue_id");
                var conversation = Guard(context, file, id, () => Parse(context, record, subset, file, id));
                if (conversation is not null) yield return conversation;
            }
        }
    }

    private Conversation Parse(ReadContext context, JsonElement record, string subset, string file, string id)
    {
        var turns = RequireArray(record, "dialogue");
        int count = turns.GetArrayLength();
        for (int t = 0; t < count; t++)
        {
            var role = RequireString(turns[t], "role");
            if (role is not ("user" or "assistant"))
                throw new RecordSkipException(SkipReason.UnknownRole, $"turn {t + 1} has role '{role}'; expected 'user' or 'assistant'");
            if (role != (t % 2 == 0 ? "user" : "assistant"))
                throw new RecordSkipException(SkipReason.BadAlternation, $"turn {t + 1} is from '{role}'; dialogues must alternate user/assistant starting with the user");
        }
        if (count == 0 || count % 2 != 0)
            throw new RecordSkipException(SkipReason.BadAlternation, $"{count} turns; a dialogue needs complete user/assistant pairs");

        var style = TagStyles[StableRandom.For(context.Seed, Name, file, id, "tags").Next(TagStyles.Length)];
        var ordinals = new Dictionary<string, int>(StringComparer.Ordinal);
        var rounds = new List<Round>();
        for (int t = 0; t < count; t += 2)
        {
            var user = turns[t];
            var question = RequireString(user, "content");
            var answer = RequireString(turns[t + 1], "content");
            var newImages = new List<ImageRef>();
            if (user.TryGetProperty("images", out var images) && images.ValueKind == JsonValueKind.Array)
            {
                foreach (var image in images.EnumerateArray())
                {
                    var imageId = RequireString(image, "image_id");
                    ordinals.TryAdd(imageId, ordinals.Count);
                    newImages.Add(new FileImageRef(context.Combine(ImageFolder(subset), imageId + ".jpg")));
                }
            }
            int markers = Regex.Count(question, Regex.Escape(ImageMarker));
            if (markers != newImages.Count)
                throw new RecordSkipException(SkipReason.PlaceholderMismatch, $"turn {t + 1} has {markers} image markers for {newImages.Count} images");
            question = Substitute(MarkerWithSpace().Replace(question, ""), ordinals, style);
            answer = Substitute(answer, ordinals, style);
            rounds.Add(new Round(newImages, Collapse(question), Collapse(answer)));
        }
        return new Conversation(context.DataSetName, rounds, [new SourceId(file, id)]);
    }

    private static string Substitute(string text, Dictionary<string, int> ordinals, string[] style) =>
        ImageReference().Replace(text, match =>
        {
            if (!ordinals.TryGetValue(match.Groups[1].Value, out int ordinal))
                throw new RecordSkipException(SkipReason.PlaceholderMismatch, $"'{match.Value}' refers to an image not introduced in the dialogue");
            var tag = ordinal < style.Length ? style[ordinal] : $"image {ordinal + 1}";
            bool sentenceStart = match.Index == 0 || (match.Index >= 2 && text[match.Index - 1] == ' ' && ".?!".Contains(text[match.Index - 2]));
            return sentenceStart ? char.ToUpperInvariant(tag[0]) + tag[1..] : tag;
        });

    private static string Collapse(string text) => Regex.Replace(text, "  +", " ").Trim();
}
