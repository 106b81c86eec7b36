using System.Text.Json;
using VisualChat.Conversations;

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
            {
                if (property.Name is not ("images" or "question" or "answer" or "type"))
                    throw new RecordSkipException(SkipReason.MalformedRecord, $"rounds[{r - 1}] has unknown field '{property.Name}' (allowed: images, question, answer, type)");
            }

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
