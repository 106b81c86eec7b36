using System.Text.Json;
using VisualChat.Conversations;
using VisualChat.Text;

namespace VisualChat.Data;

/// <summary>What a reader needs: where the data is, where to count, and the knobs that affect which records pass.</summary>
public sealed class ReadContext
{
    public required string DataSetName { get; init; }
    /// <summary>The data root (<c>{root}</c> in docs/data-formats.md).</summary>
    public required string Root { get; init; }
    /// <summary>A data-set-specific file (the generic JSONL format's file).</summary>
    public string? Path { get; init; }
    public required DataSetReport Report { get; init; }
    public long Seed { get; init; } = 1234;
    public int MaxImages { get; init; } = 8;
    public bool AllowTextOnly { get; init; }
    /// <summary>The train/eval side of a source record; readers that combine records from several sources (the
    /// LLaVA-Otter blend) use it to combine only records of the same side.</summary>
    public Func<SourceId, bool> IsEval { get; init; } = _ => false;

    public string Combine(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    /// <summary>A path relative to the root for source ids and reports (absolute when outside the root).</summary>
    public string Relative(string path)
    {
        var relative = System.IO.Path.GetRelativePath(Root, path);
        return relative.StartsWith("..", StringComparison.Ordinal) ? path : relative.Replace('\\', '/');
    }
}

/// <summary>Reads one data set format into conversations (one per source record, or per merged record group).</summary>
public abstract class DataSetReader
{
    /// <summary>The data set name used in configs (e.g. <c>llava</c>).</summary>
    public abstract string Name { get; }

    /// <summary>Default [min, max] number of conversations concatenated into one sample (paper §5.1).</summary>
    public virtual (int Min, int Max) DefaultConcat => (1, 1);

    /// <summary>Files and folders that must exist before training starts.</summary>
    public abstract IReadOnlyList<string> RequiredPaths(ReadContext context);

    public abstract IEnumerable<Conversation> Read(ReadContext context);

    /// <summary>Throws <see cref="DataSetMissingException"/> naming every missing path.</summary>
    public virtual void VerifyFiles(ReadContext context)
    {
        var missing = RequiredPaths(context).Where(p => !File.Exists(p) && !Directory.Exists(p)).ToArray();
        if (missing.Length > 0)
        {
            throw new DataSetMissingException(
                $"Data set '{context.DataSetName}' ({Name}) is missing {string.Join(", ", missing.Select(m => $"'{m}'"))}. " +
                $"Download it into the data root '{context.Root}' with the layout in docs/data-formats.md, or remove the data set from the config.");
        }
    }

    /// <summary>Checks what every format must satisfy and counts the record; returns false (after counting the skip)
    /// when the conversation is rejected.</summary>
    protected static bool Accept(ReadContext context, Conversation conversation, string file, string record)
    {
        try
        {
            Validate(context, conversation);
            context.Report.CountUnit();
            return true;
        }
        catch (RecordSkipException e)
        {
            context.Report.Skip(e.Reason, file, record, e.Message);
            return false;
        }
    }

    protected static void Validate(ReadContext context, Conversation conversation)
    {
        if (conversation.Rounds.Count == 0)
            throw new RecordSkipException(SkipReason.MalformedRecord, "no question/answer rounds");
        foreach (var round in conversation.Rounds)
        {
            if (round.Question.Contains(ConversationTemplate.ImagePlaceholder, StringComparison.Ordinal) ||
                (round.Answer?.Contains(ConversationTemplate.ImagePlaceholder, StringComparison.Ordinal) ?? false))
            {
                throw new RecordSkipException(SkipReason.PlaceholderMismatch,
                    $"'{ConversationTemplate.ImagePlaceholder}' left in a question or answer where no image is introduced");
            }
        }
        int images = conversation.ImageCount;
        if (images == 0 && !context.AllowTextOnly)
            throw new RecordSkipException(SkipReason.NoImage, "no image (set allow_text_only: true to keep text-only records)");
        if (images > context.MaxImages)
            throw new RecordSkipException(SkipReason.TooManyImages, $"{images} images, more than max_images = {context.MaxImages}");
        foreach (var image in conversation.Images)
        {
            if (!ImageRefs.Exists(image))
                throw new RecordSkipException(SkipReason.MissingImage, $"image {image.Describe()} does not exist");
        }
    }

    /// <summary>Runs <paramref name="build"/> for one record, turning rejections and shape errors into counted skips.</summary>
    protected static Conversation? Guard(ReadContext context, string file, string record, Func<Conversation?> build)
    {
        context.Report.CountRecord();
        try
        {
            var conversation = build();
            return conversation is not null && Accept(context, conversation, file, record) ? conversation : null;
        }
        catch (RecordSkipException e)
        {
            context.Report.Skip(e.Reason, file, record, e.Message);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            context.Report.Skip(SkipReason.MalformedRecord, file, record, e.Message);
        }
        return null;
    }

    /// <summary>Parses a whole JSON annotation file; a syntax error is fatal and names the file and position.</summary>
    protected static JsonDocument LoadJson(string path)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
            return JsonDocument.Parse(stream, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine}): {e.Message} Re-download the file.", e);
        }
    }

    protected static JsonElement Property(JsonElement element, string file, string name)
    {
        if (element.ValueKind != JsonValueKind.Object || !element.TryGetProperty(name, out var value))
            throw new InvalidDataException($"{file} has no top-level '{name}' field; is it the right file?");
        return value;
    }

    protected static string RequireString(JsonElement record, string name)
    {
        if (record.ValueKind != JsonValueKind.Object || !record.TryGetProperty(name, out var value))
            throw new RecordSkipException(SkipReason.MalformedRecord, $"missing field '{name}'");
        return value.ValueKind switch
        {
            JsonValueKind.String => value.GetString()!,
            JsonValueKind.Number => value.GetRawText(),
            _ => throw new RecordSkipException(SkipReason.MalformedRecord, $"field '{name}' is {value.ValueKind}, expected a string"),
        };
    }

    protected static string? OptionalString(JsonElement record, string name) =>
        record.ValueKind == JsonValueKind.Object && record.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null
            ? v.ValueKind == JsonValueKind.String ? v.GetString() : v.GetRawText()
            : null;

    protected static JsonElement RequireArray(JsonElement record, string name)
    {
        if (record.ValueKind != JsonValueKind.Object || !record.TryGetProperty(name, out var value))
            throw new RecordSkipException(SkipReason.MalformedRecord, $"missing field '{name}'");
        if (value.ValueKind != JsonValueKind.Array)
            throw new RecordSkipException(SkipReason.MalformedRecord, $"field '{name}' is {value.ValueKind}, expected an array");
        return value;
    }

    protected static string RecordId(JsonElement record, int index, params string[] idFields)
    {
        foreach (var field in idFields)
        {
            var id = record.ValueKind == JsonValueKind.Object ? OptionalString(record, field) : null;
            if (id is not null) return id;
        }
        return $"#{index}";
    }
}

/// <summary>Every built-in data set reader by name.</summary>
public static class DataSetCatalog
{
    public const string JsonlFormat = "jsonl";

    private static readonly Dictionary<string, Func<DataSetReader>> Readers = new(StringComparer.Ordinal)
    {
        ["llava"] = () => new LlavaReader(dialogue: false),
        ["llava_dial"] = () => new LlavaReader(dialogue: true),
        ["llava_otter_blend"] = () => new LlavaOtterBlendReader(),
        ["otter_mimicit_cgd"] = () => new MimicItReader("CGD"),
        ["otter_mimicit_sd"] = () => new MimicItReader("SD"),
        ["otter_mimicit_sn"] = () => new MimicItReader("SN"),
        ["otter_mimicit_tvc"] = () => new MimicItReader("TVC"),
        ["otter_mimicit_vst"] = () => new MimicItReader("VST"),
        ["sparkles_dialogue"] = () => new SparklesDialogueReader(),
        ["aokvqa"] = () => new AokvqaReader(),
        ["coco_caption"] = () => new CocoCaptionReader(),
        ["minigpt4"] = () => new MiniGpt4Reader(),
        ["ocr_vqa"] = () => new OcrVqaReader(),
        [JsonlFormat] = () => new JsonlReader(),
    };

    public static IReadOnlyCollection<string> Names => Readers.Keys;

    public static bool Exists(string format) => Readers.ContainsKey(format);

    public static DataSetReader Create(string format) =>
        Readers.TryGetValue(format, out var create)
            ? create()
            : throw new DataConfigException($"Unknown data set format '{format}'. Known: {string.Join(", ", Readers.Keys)}.");
}
