using System.Collections.Concurrent;
using System.Text;

namespace VisualChat.Data;

/// <summary>Why a source record or sample was left out.</summary>
public enum SkipReason
{
    /// <summary>An image file (or base64 map entry) the record names does not exist.</summary>
    MissingImage,
    /// <summary>Bad JSON, a missing or mistyped field.</summary>
    MalformedRecord,
    /// <summary>A speaker role other than the format's two roles.</summary>
    UnknownRole,
    /// <summary>Roles do not alternate user/assistant.</summary>
    BadAlternation,
    /// <summary>The image placeholders in the text do not match the record's images.</summary>
    PlaceholderMismatch,
    /// <summary>More images than the data set's <c>max_images</c>.</summary>
    TooManyImages,
    /// <summary>A record without images in a data set that does not allow text-only samples.</summary>
    NoImage,
    /// <summary>A 1×1 placeholder image (OCR-VQA).</summary>
    PlaceholderImage,
    /// <summary>LLaVA-Otter blend: an image (other than the last) has no LLaVA conversation on the same split side.</summary>
    NoLlavaConversation,
    /// <summary>Longer than <c>max_seq_len</c> (after image expansion) and not cuttable.</summary>
    TooLong,
}

/// <summary>One example of a skip, for the report.</summary>
public sealed record SkipExample(string File, string Record, string Message)
{
    public override string ToString() => $"{File} record {Record}: {Message}";
}

/// <summary>Counts for one data set. Thread-safe.</summary>
public sealed class DataSetReport
{
    public const int ExamplesPerReason = 5;

    private readonly ConcurrentDictionary<SkipReason, int> _skips = new();
    private readonly ConcurrentDictionary<SkipReason, List<SkipExample>> _examples = new();
    private int _recordsRead, _units, _truncationKept, _truncationCut, _truncationDropped, _roundsCut;

    public DataSetReport(string name) => Name = name;

    public string Name { get; }
    /// <summary>Source records seen (including skipped ones).</summary>
    public int RecordsRead => _recordsRead;
    /// <summary>Conversations the reader produced (one per record or per merged record group).</summary>
    public int Units => _units;
    public int TrainUnits { get; internal set; }
    public int EvalUnits { get; internal set; }
    public int TrainSamples { get; internal set; }
    public int EvalSamples { get; internal set; }
    public int TruncationKept => _truncationKept;
    public int TruncationCut => _truncationCut;
    public int TruncationDropped => _truncationDropped;
    /// <summary>Rounds removed by <c>cut_rounds</c> truncation, over all cut samples.</summary>
    public int RoundsCut => _roundsCut;

    public IReadOnlyDictionary<SkipReason, int> Skips => _skips;
    public int SkippedTotal => _skips.Values.Sum();

    public IReadOnlyList<SkipExample> Examples(SkipReason reason)
    {
        if (!_examples.TryGetValue(reason, out var list)) return [];
        lock (list) return list.ToArray();
    }

    public void CountRecord(int count = 1) => Interlocked.Add(ref _recordsRead, count);
    public void CountUnit() => Interlocked.Increment(ref _units);

    public void Skip(SkipReason reason, string file, string record, string message)
    {
        _skips.AddOrUpdate(reason, 1, (_, n) => n + 1);
        var list = _examples.GetOrAdd(reason, _ => []);
        lock (list)
            if (list.Count < ExamplesPerReason) list.Add(new SkipExample(file, record, message));
    }

    internal void CountTruncation(bool kept, bool cut, int roundsRemoved)
    {
        if (kept && !cut)
        {
            Interlocked.Increment(ref _truncationKept);
        }
        else if (cut)
        {
            Interlocked.Increment(ref _truncationCut);
            Interlocked.Add(ref _roundsCut, roundsRemoved);
        }
        else
        {
            Interlocked.Increment(ref _truncationDropped);
        }
    }
}

/// <summary>Counts for a whole data build.</summary>
public sealed class DataReport
{
    private readonly ConcurrentDictionary<string, DataSetReport> _dataSets = new();
    private readonly List<string> _order = [];

    public DataSetReport For(string dataSetName)
    {
        if (_dataSets.TryGetValue(dataSetName, out var existing)) return existing;
        lock (_order)
        {
            if (_dataSets.TryGetValue(dataSetName, out existing)) return existing;
            var created = new DataSetReport(dataSetName);
            _dataSets[dataSetName] = created;
            _order.Add(dataSetName);
            return created;
        }
    }

    public IReadOnlyList<DataSetReport> DataSets
    {
        get { lock (_order) return _order.Select(n => _dataSets[n]).ToArray(); }
    }

    public int RecordsRead => DataSets.Sum(d => d.RecordsRead);
    public int Skipped => DataSets.Sum(d => d.SkippedTotal);

    /// <summary>Skipped records as a fraction of records read (0 when nothing was read).</summary>
    public double SkipFraction => RecordsRead == 0 ? 0 : (double)Skipped / RecordsRead;

    /// <summary>Throws <see cref="DataQualityException"/> when more than <paramref name="maxSkipFraction"/> of the
    /// records were skipped.</summary>
    public void EnsureSkipFractionAtMost(double maxSkipFraction)
    {
        if (SkipFraction > maxSkipFraction)
        {
            throw new DataQualityException(
                $"{Skipped} of {RecordsRead} records ({SkipFraction:P1}) were skipped, more than max_skip_fraction = {maxSkipFraction:P1}. " +
                "Fix the data (see the reasons below) or raise max_skip_fraction in the data config.\n" + Summary());
        }
    }

    public string Summary()
    {
        var sb = new StringBuilder();
        foreach (var d in DataSets)
        {
            sb.Append($"{d.Name}: {d.RecordsRead} records read, {d.Units} conversations, {d.SkippedTotal} skipped; " +
                      $"train {d.TrainUnits} conversations → {d.TrainSamples} samples, eval {d.EvalUnits} → {d.EvalSamples}");
            if (d.TruncationKept + d.TruncationCut + d.TruncationDropped > 0)
                sb.Append($"; length: {d.TruncationKept} fit, {d.TruncationCut} cut ({d.RoundsCut} rounds removed), {d.TruncationDropped} dropped");
            sb.AppendLine();
            foreach (var (reason, count) in d.Skips.OrderBy(kv => kv.Key))
            {
                sb.AppendLine($"  skipped {reason}: {count}");
                foreach (var example in d.Examples(reason)) sb.AppendLine($"    e.g. {example}");
            }
        }
        return sb.ToString();
    }
}

/// <summary>Too much of the data was bad.</summary>
public sealed class DataQualityException(string message) : Exception(message);

/// <summary>A configured data set's files are not where they are expected.</summary>
public sealed class DataSetMissingException(string message) : Exception(message);

/// <summary>The data config is invalid; the message names the key.</summary>
public sealed class DataConfigException(string message) : Exception(message);

/// <summary>A record was rejected; readers throw it internally and count it as a skip.</summary>
public sealed class RecordSkipException(SkipReason reason, string message) : Exception(message)
{
    public SkipReason Reason { get; } = reason;
}
