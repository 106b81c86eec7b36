using System.Text.Json;
using VisualChat.Conversations;
using VisualChat.Text;

namespace VisualChat.Data;

/// <summary>
/// MIMIC-IT (Otter) subsets CGD, SD, SN, TVC, VST. Each instruction and its <c>rel_ins_ids</c> (instructions about the
/// same images, each used once) become one multi-round conversation whose first round introduces all images; the
/// order of the merged rounds is shuffled per group under the seed, as in the original. CGD images are COCO train2017
/// files; the other subsets reference entries of their base64 image map, which is only indexed, never decoded here.
/// </summary>
public sealed class MimicItReader(string subset) : DataSetReader
{
    public const string Folder = "MIMIC-IT";
    public const string CgdImagePrefix = "CGD_IMG_";

    public string Subset { get; } = subset;
    public override string Name => "otter_mimicit_" + Subset.ToLowerInvariant();
    private bool UsesCoco => Subset == "CGD";

    public static string InstructionsFile(string subset) => $"{Folder}/{subset}_instructions.json";
    public static string ImageMapFile(string subset) => $"{Folder}/{subset}.json";

    public override IReadOnlyList<string> RequiredPaths(ReadContext c) =>
        UsesCoco
            ? [c.Combine(InstructionsFile(Subset)), c.Combine(LlavaReader.ImageFolder)]
            : [c.Combine(InstructionsFile(Subset)), c.Combine(ImageMapFile(Subset))];

    public override void VerifyFiles(ReadContext context)
    {
        var map = context.Combine(ImageMapFile(Subset));
        var parquet = Path.ChangeExtension(map, ".parquet");
        if (!UsesCoco && !File.Exists(map) && File.Exists(parquet))
        {
            throw new DataSetMissingException(
                $"Data set '{context.DataSetName}' expects the base64 image map '{map}' (JSON object image_id → base64), but only '{parquet}' exists. " +
                "Parquet maps are not read; convert it to the JSON layout (one object of id → base64 string).");
        }

        base.VerifyFiles(context);
    }

    /// <summary>One merged instruction group (primary instruction first).</summary>
    internal sealed record Group(string File, IReadOnlyList<string> Keys, IReadOnlyList<string> ImageIds,
        IReadOnlyList<(string Instruction, string Answer)> Pairs, string? Error, SkipReason ErrorReason);

    internal static ImageRef CgdImage(ReadContext context, string imageId) =>
        new FileImageRef(context.Combine(LlavaReader.ImageFolder,
            (imageId.StartsWith(CgdImagePrefix, StringComparison.Ordinal) ? imageId[CgdImagePrefix.Length..] : imageId) + ".jpg"));

    /// <summary>Merges instructions with their related instructions, in file order (deterministic).</summary>
    internal static List<Group> LoadGroups(ReadContext context, string path)
    {
        using var doc = LoadJson(path);
        var data = Property(doc.RootElement, path, "data");
        if (data.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: 'data' should be an object keyed by instruction id.");
        var records = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var p in data.EnumerateObject())
        {
            if (records.TryAdd(p.Name, p.Value.Clone())) order.Add(p.Name);
        }
        var file = context.Relative(path);
        var consumed = new HashSet<string>(StringComparer.Ordinal);
        var groups = new List<Group>();
        foreach (var key in order)
        {
            if (!consumed.Add(key)) continue;
            var keys = new List<string> { key };
            var pairs = new List<(string, string)>();
            IReadOnlyList<string> imageIds = [];
            string? error = null;
            var reason = SkipReason.MalformedRecord;
            try
            {
                var record = records[key];
                imageIds = RequireArray(record, "image_ids").EnumerateArray()
                    .Select(e => e.GetString() ?? throw new RecordSkipException(SkipReason.MalformedRecord, "image_ids holds a non-string")).ToArray();
                pairs.Add((RequireString(record, "instruction"), RequireString(record, "answer")));
                if (record.TryGetProperty("rel_ins_ids", out var related) && related.ValueKind == JsonValueKind.Array)
                {
                    foreach (var rel in related.EnumerateArray())
                    {
                        var relKey = rel.GetString();
                        if (relKey is null || relKey == key || !records.TryGetValue(relKey, out var relRecord) || !consumed.Add(relKey)) continue;
                        keys.Add(relKey);
                        pairs.Add((RequireString(relRecord, "instruction"), RequireString(relRecord, "answer")));
                    }
                }
            }
            catch (RecordSkipException e)
            {
                error = e.Message;
                reason = e.Reason;
            }
            catch (InvalidOperationException e)
            {
                error = e.Message;
            }
            groups.Add(new Group(file, keys, imageIds, pairs, error, reason));
        }
        return groups;
    }

    internal static string CleanInstruction(string text) =>
        text.Replace(ConversationTemplate.ImagePlaceholder, "", StringComparison.Ordinal).Trim();

    public override IEnumerable<Conversation> Read(ReadContext context)
    {
        var path = context.Combine(InstructionsFile(Subset));
        var mapFile = context.Combine(ImageMapFile(Subset));
        foreach (var group in LoadGroups(context, path))
        {
            context.Report.CountRecord(group.Keys.Count - 1);
            var conversation = Guard(context, group.File, group.Keys[0], () =>
            {
                if (group.Error is not null) throw new RecordSkipException(group.ErrorReason, group.Error);
                if (group.ImageIds.Count == 0) throw new RecordSkipException(SkipReason.NoImage, "empty image_ids");
                var images = group.ImageIds
                    .Select(id => UsesCoco ? CgdImage(context, id) : new Base64MapImageRef(mapFile, id))
                    .ToArray();
                var order = Enumerable.Range(0, group.Pairs.Count).ToArray();
                StableRandom.For(context.Seed, Name, group.Keys[0], "order").Shuffle(order);
                var rounds = order.Select((pairIndex, i) => new Round(
                    i == 0 ? images : [],
                    CleanInstruction(group.Pairs[pairIndex].Instruction),
                    group.Pairs[pairIndex].Answer)).ToArray();
                return new Conversation(context.DataSetName, rounds, group.Keys.Select(k => new SourceId(group.File, k)).ToArray());
            });
            if (conversation is not null) yield return conversation;
        }
    }
}

/// <summary>
/// LLaVA-Otter blend (llava_otter_blend_dataset.py, followup off): for each CGD group whose images have LLaVA
/// conversations, some LLaVA conversations about image 1, then about image 2 (each image introduced where first
/// discussed), then 1..n of the CGD instructions about both. Only LLaVA records on the CGD group's train/eval side
/// are used, so the blend never leaks a record across the split.
/// </summary>
public sealed class LlavaOtterBlendReader : DataSetReader
{
    public override string Name => "llava_otter_blend";

    private static readonly string[] LlavaFiles = [.. LlavaReader.SingleTurnFiles, .. LlavaReader.DialogueFiles];

    public override IReadOnlyList<string> RequiredPaths(ReadContext c) =>
        [c.Combine(MimicItReader.InstructionsFile("CGD")), .. LlavaFiles.Select(f => c.Combine(f)), c.Combine(LlavaReader.ImageFolder)];

    private sealed record LlavaConversation(SourceId Source, IReadOnlyList<Round> Rounds);

    public override IEnumerable<Conversation> Read(ReadContext context)
    {
        // LLaVA conversations by image; records that fail to parse are counted by the llava data sets, not here.
        var byImage = new Dictionary<string, List<LlavaConversation>>(StringComparer.Ordinal);
        foreach (var relative in LlavaFiles)
        {
            var path = context.Combine(relative);
            using var doc = LoadJson(path);
            int index = 0;
            foreach (var record in doc.RootElement.EnumerateArray())
            {
                var source = new SourceId(context.Relative(path), RecordId(record, index++, "id"));
                try
                {
                    var parsed = LlavaReader.Parse(context, record);
                    if (parsed.ImageName is null) continue;
                    if (!byImage.TryGetValue(parsed.ImageName, out var list)) byImage[parsed.ImageName] = list = [];
                    list.Add(new LlavaConversation(source, parsed.Rounds));
                }
                catch (Exception e) when (e is RecordSkipException or InvalidOperationException) { }
            }
        }

        var cgdPath = context.Combine(MimicItReader.InstructionsFile("CGD"));
        foreach (var group in MimicItReader.LoadGroups(context, cgdPath))
        {
            context.Report.CountRecord(group.Keys.Count - 1);
            var conversation = Guard(context, group.File, group.Keys[0], () => Build(context, group, byImage));
            if (conversation is not null) yield return conversation;
        }
    }

    private Conversation Build(ReadContext context, MimicItReader.Group group, Dictionary<string, List<LlavaConversation>> byImage)
    {
        if (group.Error is not null) throw new RecordSkipException(group.ErrorReason, group.Error);
        if (group.ImageIds.Count == 0) throw new RecordSkipException(SkipReason.NoImage, "empty image_ids");
        var primary = new SourceId(group.File, group.Keys[0]);
        bool side = context.IsEval(primary);
        var random = StableRandom.For(context.Seed, Name, group.Keys[0]);
        var images = group.ImageIds.Select(id => MimicItReader.CgdImage(context, id)).ToArray();
        var rounds = new List<Round>();
        var sources = group.Keys.Select(k => new SourceId(group.File, k)).ToList();
        int introduced = 0;
        for (int i = 0; i < images.Length; i++)
        {
            var imageName = Path.GetFileName(((FileImageRef)images[i]).Path);
            var candidates = byImage.TryGetValue(imageName, out var list)
                ? list.Where(c => context.IsEval(c.Source) == side).ToArray()
                : [];
            int minDraw = i < images.Length - 1 ? 1 : 0; // the last image may be introduced by the CGD question
            if (candidates.Length < minDraw)
                throw new RecordSkipException(SkipReason.NoLlavaConversation, $"image {imageName} has no LLaVA conversation on this split side");
            if (introduced < i) break; // an earlier image was left for CGD: keep image order by stopping here
            int draw = random.NextInclusive(minDraw, candidates.Length);
            foreach (var pick in random.Sample(candidates.Length, draw))
            {
                var chosen = candidates[pick];
                sources.Add(chosen.Source);
                foreach (var round in chosen.Rounds)
                {
                    bool introduce = introduced == i;
                    rounds.Add(new Round(introduce ? [images[i]] : [], round.Question, round.Answer));
                    if (introduce) introduced++;
                }
            }
        }
        var order = random.Sample(group.Pairs.Count, random.NextInclusive(1, group.Pairs.Count));
        foreach (var pairIndex in order)
        {
            var remaining = images.Skip(introduced).ToArray();
            introduced = images.Length;
            var (instruction, answer) = group.Pairs[pairIndex];
            rounds.Add(new Round(remaining, MimicItReader.CleanInstruction(instruction), answer));
        }
        return new Conversation(context.DataSetName, rounds, sources);
    }
}
