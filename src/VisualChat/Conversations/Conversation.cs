namespace VisualChat.Conversations;

/// <summary>Where an image comes from. Readers only reference images; bytes are loaded on demand by
/// <see cref="Vision.Imaging.ImageLoader"/>, so huge base64 maps are never decoded while reading.</summary>
public abstract record ImageRef
{
    /// <summary>A human-readable location (file path, or map file + key) for prompts, reports and errors.</summary>
    public abstract string Describe();
}

/// <summary>An image file on disk (COCO ids and other file-based ids are resolved to this by the readers).</summary>
public sealed record FileImageRef(string Path) : ImageRef
{
    public override string Describe() => Path;
}

/// <summary>An entry of a MIMIC-IT style JSON object <c>{image_id: base64 JPEG}</c>.</summary>
public sealed record Base64MapImageRef(string MapFile, string Key) : ImageRef
{
    public override string Describe() => $"{MapFile}#{Key}";
}

/// <summary>One source record: the file it was read from (relative to the data root where possible) and its id
/// inside that file. Used for the train/eval split, leakage checks and error reports.</summary>
public readonly record struct SourceId(string File, string Record)
{
    public override string ToString() => $"{File}#{Record}";
}

/// <summary>One question/answer exchange. <see cref="NewImages"/> are the images this round introduces
/// (shown before the question); images introduced earlier stay visible to later rounds.</summary>
/// <param name="Category">Optional question category (the JSONL <c>type</c> field) for per-category evaluation.</param>
public sealed record Round(IReadOnlyList<ImageRef> NewImages, string Question, string? Answer, string? Category = null)
{
    public static Round TextOnly(string question, string? answer) => new([], question, answer);
}

/// <summary>An ordered multi-round, multi-image conversation. <see cref="Round.Answer"/> of the last round is null for
/// inference prompts. The first <see cref="SourceIds"/> entry decides the train/eval side.</summary>
public sealed record Conversation(
    string DataSetName,
    IReadOnlyList<Round> Rounds,
    IReadOnlyList<SourceId> SourceIds,
    string? System = null)
{
    public int ImageCount => Rounds.Sum(r => r.NewImages.Count);

    public IEnumerable<ImageRef> Images => Rounds.SelectMany(r => r.NewImages);

    /// <summary>The first <paramref name="roundCount"/> rounds (cutting at a round boundary keeps every kept
    /// round's images intact).</summary>
    public Conversation TakeRounds(int roundCount) => this with { Rounds = Rounds.Take(roundCount).ToArray() };

    public Conversation WithAnswer(int roundIndex, string answer)
    {
        var rounds = Rounds.ToArray();
        rounds[roundIndex] = rounds[roundIndex] with { Answer = answer };
        return this with { Rounds = rounds };
    }

    public Conversation AppendRound(Round round) => this with { Rounds = [.. Rounds, round] };

    /// <summary>Concatenates conversations into one (paper §5.1 blending); images keep their order and are
    /// numbered across the whole result by the template.</summary>
    public static Conversation Concatenate(string dataSetName, IReadOnlyList<Conversation> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("Cannot concatenate zero conversations.", nameof(parts));
        if (parts.Count == 1) return parts[0];
        return new Conversation(
            dataSetName,
            parts.SelectMany(p => p.Rounds).ToArray(),
            parts.SelectMany(p => p.SourceIds).ToArray(),
            parts[0].System);
    }
}
