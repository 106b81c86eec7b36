using System.Text.Json;

namespace VisualChat.Data;

/// <summary>
/// Our own format (docs/data-formats.md): one conversation per line,
/// <c>{"id": "...", "system": "...", "rounds": [{"images": ["a.png"], "question": "...", "answer": "..."}]}</c>;
/// <c>id</c>, <c>system</c> and <c>images</c> are optional; image paths are relative to the JSONL file's folder.
/// </summary>
public sealed class JsonlReader : DataSetReader
{
    public override string Name => DataSetCatalog.JsonlFormat;

    private static string FilePath(ReadContext c) =>
        c.Path is null
            ? throw new DataConfigException($"datasets['{c.DataSetName}'].path: the jsonl format needs the path of its .jsonl file.")
            : Path.IsPathRooted(c.Path) ? c.Path : c.Combine(c.Path);

    public override IReadOnlyList<string> RequiredPaths(ReadContext c) => [FilePath(c)];

    public override IEnumerable<Conversation> Read(ReadContext context)
    {
        var path = FilePath(context);
        var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var file = context.Relative(path);
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            var label = $"line {lineNumber}";
            var conversation = Guard(context, file, label, () =>
            {
                JsonDocument doc;
                try
                {
                    doc = JsonDocument.Parse(line);
                }
                catch (JsonException e)
                {
                    throw new RecordSkipException(SkipReason.MalformedRecord, $"not valid JSON: {e.Message}");
                }
                using (doc)
                    return Parse(context, doc.RootElement, folder, file, lineNumber);
            });
            if (conversation is not null) yield return conversation;
        }
    }

    private static Conversation Parse(ReadContext context, JsonElement record, string folder, string file, int lineNumber)
    {
        if (record.ValueKind != JsonValueKind.Object)
            throw new RecordSkipException(SkipReason.MalformedRecord, $"expected a JSON object, found {record.ValueKind}");
        var id = OptionalString(record, "id") ?? $"line {lineNumber}";
        var system = OptionalString(record, "system");
        var rounds = new List<Round>();
        int r = 0;
        foreach (var round in RequireArray(record, "rounds").EnumerateArray())
        {
            r++;
            if (round.ValueKind != JsonValueKind.Object)
                throw new RecordSkipException(SkipReason.MalformedRecord, $"rounds[{r - 1}] is not an object");
            foreach (var property in round.EnumerateObject())
                if (property.Name is not ("images" or "question" or "answer" or "type"))
                    throw new RecordSkipException(SkipReason.MalformedRecord, $"rounds[{r - 1}] has unknown field '{property.Name}' (allowed: images, question, answer, type)");
            var images = new List<ImageRef>();
            if (round.TryGetProperty("images", out var list) && list.ValueKind != JsonValueKind.Null)
            {
                if (list.ValueKind != JsonValueKind.Array)
                    throw new RecordSkipException(SkipReason.MalformedRecord, $"rounds[{r - 1}].images is not an array");
                foreach (var image in list.EnumerateArray())
                {
                    var imagePath = image.GetString() ?? throw new RecordSkipException(SkipReason.MalformedRecord, $"rounds[{r - 1}].images holds a non-string");
                    images.Add(new FileImageRef(Path.IsPathRooted(imagePath) ? imagePath : Path.GetFullPath(Path.Combine(folder, imagePath))));
                }
            }
            string? category = round.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String ? type.GetString() : null;
            rounds.Add(new Round(images, RequireString(round, "question"), RequireString(round, "answer"), category));
        }
        return new Conversation(context.DataSetName, rounds, [new SourceId(file, id)], system);
    }
}

/// <summary>One DeepSpeed-VisualChat evaluation conversation: every round's answer is null and is filled in round by
/// round at inference (<see cref="Conversation.TakeRounds"/> + <see cref="Conversation.WithAnswer"/>).</summary>
public sealed record EvalConversation(string Name, Conversation Conversation);

/// <summary>The DeepSpeed-VisualChat eval files (<c>eval/eval_data/*.json</c>): <c>{"test": [["question", "img1 img2"],
/// ["question"]]}</c>, image paths relative to the app folder (they start with <c>./eval/eval_data/images/</c>).</summary>
public static class DsvcEvalReader
{
    public static IReadOnlyList<EvalConversation> Read(string jsonFile, string appFolder)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(jsonFile));
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{jsonFile} should hold an object of test name → list of rounds.");
        var result = new List<EvalConversation>();
        foreach (var test in doc.RootElement.EnumerateObject())
        {
            var rounds = new List<Round>();
            int index = 0;
            foreach (var round in test.Value.EnumerateArray())
            {
                index++;
                if (round.ValueKind != JsonValueKind.Array || round.GetArrayLength() is < 1 or > 2)
                    throw new InvalidDataException($"{jsonFile}: test '{test.Name}' round {index} should be [\"question\"] or [\"question\", \"image paths\"].");
                var question = round[0].GetString() ?? "";
                var images = round.GetArrayLength() == 2
                    ? round[1].GetString()!.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                        .Select(p => (ImageRef)new FileImageRef(Path.GetFullPath(Path.Combine(appFolder, p)))).ToArray()
                    : [];
                rounds.Add(new Round(images, question, null));
            }
            result.Add(new EvalConversation(test.Name,
                new Conversation("dsvc_eval", rounds, [new SourceId(Path.GetFileName(jsonFile), test.Name)])));
        }
        return result;
    }
}
