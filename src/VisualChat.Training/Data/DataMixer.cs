using VisualChat.Conversations;
namespace VisualChat.Data;

/// <summary>Blended train and eval conversations and how they were obtained.</summary>
public sealed record MixedData(IReadOnlyList<Conversation> Train, IReadOnlyList<Conversation> Eval, DataReport Report);

/// <summary>
/// Reads every configured data set, splits SOURCE records into train/eval before blending (so no record is on both
/// sides), blends each side (paper §5.1: random concatenation of 1..N conversations into one multi-image sample), and
/// draws the configured number of samples. Every random choice comes from a <see cref="StableRandom"/> stream keyed by
/// (seed, data set, purpose), so the result does not depend on thread count.
/// </summary>
public static class DataMixer
{
    /// <summary>The train/eval side of a source record: a hash of (seed, file, record) against the eval fraction.
    /// A conversation goes where its first source id goes.</summary>
    public static bool IsEval(long seed, double evalFraction, SourceId source) =>
        evalFraction > 0 && StableRandom.UnitHash(seed, "split", source.File, source.Record) < evalFraction;

    public static ReadContext ContextFor(DataConfig config, DataSetConfig dataSet, DataReport report) => new()
    {
        DataSetName = dataSet.Name,
        Root = dataSet.Format != DataSetCatalog.JsonlFormat && dataSet.Path is not null
            ? Path.GetFullPath(Path.Combine(config.Root, dataSet.Path))
            : config.Root,
        Path = dataSet.Format == DataSetCatalog.JsonlFormat ? dataSet.Path : null,
        Report = report.For(dataSet.Name),
        Seed = config.Seed,
        MaxImages = dataSet.MaxImages,
        AllowTextOnly = dataSet.AllowTextOnly,
        IsEval = s => IsEval(config.Seed, config.EvalFraction, s),
    };

    /// <summary>Checks every data set's files; throws <see cref="DataSetMissingException"/> naming each missing path.</summary>
    public static void VerifyFiles(DataConfig config)
    {
        var report = new DataReport();
        var errors = new List<string>();
        foreach (var dataSet in config.DataSets)
        {
            try
            {
                DataSetCatalog.Create(dataSet.Format).VerifyFiles(ContextFor(config, dataSet, report));
            }
            catch (DataSetMissingException e)
            {
                errors.Add(e.Message);
            }
        }
        if (errors.Count > 0) throw new DataSetMissingException(string.Join("\n", errors));
    }

    /// <param name="enforceSkipLimit">false for inspection: report skips instead of failing on max_skip_fraction.</param>
    public static MixedData Build(DataConfig config, int maxDegreeOfParallelism = 1, bool enforceSkipLimit = true, CancellationToken cancellationToken = default)
    {
        VerifyFiles(config);
        var report = new DataReport();
        foreach (var d in config.DataSets) report.For(d.Name);
        var perDataSet = new (List<Conversation> Train, List<Conversation> Eval)[config.DataSets.Count];
        Parallel.For(0, config.DataSets.Count,
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, maxDegreeOfParallelism), CancellationToken = cancellationToken },
            i => perDataSet[i] = BuildOne(config, config.DataSets[i], report, cancellationToken));
        if (enforceSkipLimit) report.EnsureSkipFractionAtMost(config.MaxSkipFraction);
        return new MixedData(
            perDataSet.SelectMany(p => p.Train).ToArray(),
            perDataSet.SelectMany(p => p.Eval).ToArray(),
            report);
    }

    private static (List<Conversation>, List<Conversation>) BuildOne(DataConfig config, DataSetConfig dataSet, DataReport report, CancellationToken cancellationToken)
    {
        var context = ContextFor(config, dataSet, report);
        var reader = DataSetCatalog.Create(dataSet.Format);
        var train = new List<Conversation>();
        var eval = new List<Conversation>();
        foreach (var conversation in reader.Read(context))
        {
            cancellationToken.ThrowIfCancellationRequested();
            var side = conversation.SourceIds.Count > 0 && IsEval(config.Seed, config.EvalFraction, conversation.SourceIds[0]) ? eval : train;
            side.Add(conversation);
        }
        context.Report.TrainUnits = train.Count;
        context.Report.EvalUnits = eval.Count;
        var blendedTrain = Blend(dataSet.Name, train, dataSet.ConcatMin, dataSet.ConcatMax, dataSet.MaxImages, StableRandom.For(config.Seed, dataSet.Name, "blend", "train"));
        var blendedEval = Blend(dataSet.Name, eval, dataSet.ConcatMin, dataSet.ConcatMax, dataSet.MaxImages, StableRandom.For(config.Seed, dataSet.Name, "blend", "eval"));
        int available = blendedTrain.Count + blendedEval.Count;
        double factor = dataSet.Samples is { } samples ? (available == 0 ? 0 : (double)samples / available) : dataSet.Weight;
        var sampledTrain = Draw(blendedTrain, factor, StableRandom.For(config.Seed, dataSet.Name, "draw", "train"));
        var sampledEval = Draw(blendedEval, factor, StableRandom.For(config.Seed, dataSet.Name, "draw", "eval"));
        context.Report.TrainSamples = sampledTrain.Count;
        context.Report.EvalSamples = sampledEval.Count;
        return (sampledTrain, sampledEval);
    }

    /// <summary>Shuffles the conversations, then groups consecutive ones into samples of a random size in
    /// [min, max] (a group closes early rather than exceed <paramref name="maxImages"/>).</summary>
    public static List<Conversation> Blend(string dataSetName, IReadOnlyList<Conversation> conversations, int min, int max, int maxImages, StableRandom random)
    {
        if (max <= 1) return conversations.ToList();
        var order = conversations.ToArray();
        random.Shuffle(order);
        var result = new List<Conversation>();
        int at = 0;
        while (at < order.Length)
        {
            int target = random.NextInclusive(min, max);
            var group = new List<Conversation> { order[at++] };
            int images = group[0].ImageCount;
            while (group.Count < target && at < order.Length && images + order[at].ImageCount <= maxImages)
            {
                images += order[at].ImageCount;
                group.Add(order[at++]);
            }
            result.Add(Conversation.Concatenate(dataSetName, group));
        }
        return result;
    }

    /// <summary>round(factor × count) items: whole shuffled passes for factors above 1, a shuffled subset for the rest.</summary>
    public static List<Conversation> Draw(IReadOnlyList<Conversation> items, double factor, StableRandom random)
    {
        int target = (int)Math.Round(factor * items.Count, MidpointRounding.AwayFromZero);
        if (target == items.Count) return items.ToList();
        var result = new List<Conversation>(target);
        while (result.Count < target && items.Count > 0)
        {
            var order = Enumerable.Range(0, items.Count).ToArray();
            random.Shuffle(order);
            foreach (var index in order.Take(target - result.Count)) result.Add(items[index]);
        }
        return result;
    }
}
