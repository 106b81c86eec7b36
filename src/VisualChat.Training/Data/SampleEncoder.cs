using VisualChat.Conversations;
using VisualChat.Text;

namespace VisualChat.Data;

/// <summary>A conversation that fits <c>max_seq_len</c> (possibly cut at a round boundary) and its lengths.</summary>
public sealed record PreparedSample(Conversation Conversation, int TokenLength, int ExpandedLength);

/// <summary>The outcome of fitting one conversation to the length limit.</summary>
public sealed record FitResult(PreparedSample? Sample, bool Cut, int RoundsRemoved, int FullExpandedLength);

/// <summary>
/// Tokenizes conversations and enforces <c>max_seq_len</c> counted AFTER image expansion (each image is
/// <c>imageTokens</c> embeddings). Over-long samples are dropped, or cut after the last round that still fits, never
/// through an image (images belong to rounds).
/// </summary>
public sealed class SampleEncoder(ConversationTemplate template, ITokenizer tokenizer, int maxSeqLen, int imageTokens, TruncationMode mode)
{
    public ConversationTemplate Template { get; } = template;
    public ITokenizer Tokenizer { get; } = tokenizer;
    public int MaxSeqLen { get; } = maxSeqLen;
    public int ImageTokens { get; } = imageTokens;
    public TruncationMode Mode { get; } = mode;

    public TokenizedSample Encode(Conversation conversation) => Template.Tokenize(conversation, Tokenizer);

    public FitResult Fit(Conversation conversation)
    {
        var rounds = Template.TokenizeRounds(conversation, Tokenizer);
        int total = rounds.Sum(r => r.ExpandedLength(ImageTokens));
        int tokens = rounds.Sum(r => r.InputIds.Length);
        if (total <= MaxSeqLen) return new FitResult(new PreparedSample(conversation, tokens, total), false, 0, total);
        if (Mode == TruncationMode.Drop) return new FitResult(null, false, 0, total);
        int kept = 0, keptLength = 0, keptTokens = 0;
        while (kept < rounds.Count && keptLength + rounds[kept].ExpandedLength(ImageTokens) <= MaxSeqLen)
        {
            keptLength += rounds[kept].ExpandedLength(ImageTokens);
            keptTokens += rounds[kept].InputIds.Length;
            kept++;
        }
        if (kept == 0) return new FitResult(null, false, 0, total);
        return new FitResult(new PreparedSample(conversation.TakeRounds(kept), keptTokens, keptLength), true, rounds.Count - kept, total);
    }

    /// <summary>Fits every conversation (in parallel, order kept) and counts kept/cut/dropped in the report.</summary>
    public IReadOnlyList<PreparedSample> Prepare(IReadOnlyList<Conversation> conversations, DataReport report, int maxDegreeOfParallelism = 1, CancellationToken cancellationToken = default)
    {
        var results = new FitResult[conversations.Count];
        Parallel.For(0, conversations.Count,
            new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, maxDegreeOfParallelism), CancellationToken = cancellationToken },
            i => results[i] = Fit(conversations[i]));
        var prepared = new List<PreparedSample>(conversations.Count);
        for (int i = 0; i < results.Length; i++)
        {
            var r = results[i];
            var dataSet = report.For(conversations[i].DataSetName);
            dataSet.CountTruncation(r.Sample is not null, r.Cut, r.RoundsRemoved);
            if (r.Sample is null)
            {
                dataSet.Skip(SkipReason.TooLong, conversations[i].SourceIds.FirstOrDefault().File ?? "", string.Join(",", conversations[i].SourceIds.Take(3).Select(s => s.Record)),
                    $"{r.FullExpandedLength} tokens after image expansion > max_seq_len {MaxSeqLen}" + (Mode == TruncationMode.CutRounds ? " even for the first round" : ""));
            }
            else
            {
                prepared.Add(r.Sample);
            }
        }
        return prepared;
    }
}
