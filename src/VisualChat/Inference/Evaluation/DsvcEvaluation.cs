using System.Diagnostics;
using VisualChat.Inference.Chat;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Conversations;

namespace VisualChat.Inference.Evaluation;

/// <summary>One CSV row: a round of an eval conversation and the model's answer.</summary>
public sealed record EvalRow(string TestName, string ImagePaths, string Question, string Answer);

public sealed record EvalSummary(int ConversationsDone, int ConversationsSkipped, int Rounds, long GeneratedTokens, TimeSpan WallTime)
{
    public double TokensPerSecond => WallTime > TimeSpan.Zero ? GeneratedTokens / WallTime.TotalSeconds : 0;
}

/// <summary>An eval conversation plus the image paths of each round as the JSON file wrote them.</summary>
public sealed record EvalCase(string TestName, Conversation Conversation, IReadOnlyList<string> RoundImagePaths);

/// <summary>
/// Runs DeepSpeed-VisualChat eval conversations the way its eval script does: round by round, with the model's own
/// earlier answers as history. Conversations are decoded several at a time (rows of one batch); results keep the input order.
/// </summary>
public sealed class DsvcEvaluation(VisualChatModel model, GenerationOptions options, int batchSize = 4)
{
    readonly ITokenizer tokenizer = ChatRoundPrompt.TokenizerOf(model);
    readonly ClipImageProcessor processor = new(ChatRoundPrompt.ImageProcessorFor(model));

    /// <summary>Reads an eval JSON file; image paths stay as written (per round, space-separated) for the CSV.</summary>
    public static IReadOnlyList<EvalCase> ReadCases(string jsonFile, string imagesRoot)
    {
        var conversations = DsvcEvalReader.Read(jsonFile, imagesRoot);
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(jsonFile));
        var written = doc.RootElement.EnumerateObject().ToDictionary(t => t.Name,
            t => t.Value.EnumerateArray().Select(r => r.GetArrayLength() == 2 ? string.Join(' ', r[1].GetString()!.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)) : "").ToArray());
        return conversations.Select(c => new EvalCase(c.Name, c.Conversation, written[c.Name])).ToList();
    }

    /// <summary>The folder the JSON's image paths (<c>./eval/eval_data/images/...</c>) resolve against: the nearest
    /// folder above the file where they exist; null when none does.</summary>
    public static string? FindImagesRoot(string jsonFile)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(jsonFile));
        var paths = doc.RootElement.EnumerateObject().SelectMany(t => t.Value.EnumerateArray())
            .Where(r => r.GetArrayLength() == 2).SelectMany(r => r[1].GetString()!.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToList();
        if (paths.Count == 0) return Path.GetDirectoryName(Path.GetFullPath(jsonFile));
        for (var dir = new DirectoryInfo(Path.GetDirectoryName(Path.GetFullPath(jsonFile))!); dir is not null; dir = dir.Parent)
            if (paths.Any(p => File.Exists(Path.Combine(dir.FullName, p)))) return dir.FullName;
        return null;
    }

    /// <summary>Runs every case; a case with a missing image, or one whose batch outgrows the model's context, is skipped
    /// and reported through <paramref name="onSkipped"/> with the reason. Returns the rows in input order.</summary>
    public (IReadOnlyList<EvalRow> Rows, EvalSummary Summary) Run(IReadOnlyList<EvalCase> cases, Action<EvalCase, string>? onSkipped = null, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        var results = new EvalRow[cases.Count][];
        var runnable = new List<int>();
        int skipped = 0;
        for (int i = 0; i < cases.Count; i++) {
            var missing = cases[i].Conversation.Images.OfType<FileImageRef>().FirstOrDefault(image => !File.Exists(image.Path));
            if (missing is not null) { skipped++; onSkipped?.Invoke(cases[i], $"image '{missing.Path}' does not exist"); continue; }
            runnable.Add(i);
        }
        long tokens = 0;
        // Rows of one batch must append a round at every step, so conversations with the same number of rounds go together.
        foreach (var group in runnable.GroupBy(i => cases[i].Conversation.Rounds.Count).ToList())
            foreach (var chunk in group.Chunk(Math.Max(1, batchSize))) {
                cancellationToken.ThrowIfCancellationRequested();
                try {
                    tokens += RunBatch(cases, chunk, results);
                } catch (ContextFullException e) {
                    foreach (var i in chunk) {
                        results[i] = null!;
                        runnable.Remove(i);
                        skipped++;
                        onSkipped?.Invoke(cases[i], e.Message);
                    }
                }
            }
        var rows = results.Where(r => r is not null).SelectMany(r => r).ToList();
        return (rows, new EvalSummary(runnable.Count, skipped, rows.Count, tokens, clock.Elapsed));
    }

    long RunBatch(IReadOnlyList<EvalCase> cases, int[] indices, EvalRow[][] results)
    {
        int batch = indices.Length;
        int roundCount = cases[indices[0]].Conversation.Rounds.Count;
        var conversations = indices.Select(i => cases[i].Conversation).ToArray();
        var lacksEos = new bool[batch];
        var template = new ConversationTemplate(model.Config.TemplateOptions);
        long tokens = 0;
        long maxContext = model.LmConfig.MaxPositionEmbeddings;
        foreach (var i in indices) results[i] = new EvalRow[roundCount];
        using var state = model.CreateConversation(batch, Math.Min(512, maxContext));
        for (int r = 0; r < roundCount; r++) {
            var ids = new IReadOnlyList<int>[batch];
            var pixels = new TorchSharp.torch.Tensor?[batch];
            try {
                long longest = 0;
                for (int b = 0; b < batch; b++) {
                    var sofar = conversations[b].TakeRounds(r + 1);
                    ids[b] = ChatRoundPrompt.NextRoundIds(template, tokenizer, sofar, lacksEos[b]);
                    var images = sofar.Rounds[r].NewImages.OfType<FileImageRef>().Select(i => ImageLoader.Load(i.Path)).ToList();
                    pixels[b] = images.Count > 0 ? processor.Preprocess(images) : null;
                    longest = Math.Max(longest, ChatRoundPrompt.ExpandedLength(model, ids[b].Count, images.Count));
                }
                long room = maxContext - state.Length - longest;
                if (room < 1) throw new ContextFullException(state.Length + longest + 1, maxContext);
                model.Append(state, ids, pixels);
                var roundOptions = options with { MaxNewTokens = (int)Math.Min(options.MaxNewTokens, room) };
                var generated = model.Generate(state, roundOptions, decode: ids => tokenizer.Decode(ids));
                for (int b = 0; b < batch; b++) {
                    var answer = Answer(generated[b]);
                    tokens += generated[b].TokenIds.Count;
                    lacksEos[b] = generated[b].FinishReason != FinishReason.EndOfSequence;
                    conversations[b] = conversations[b].WithAnswer(r, answer);
                    var c = cases[indices[b]];
                    results[indices[b]][r] = new EvalRow(c.TestName, c.RoundImagePaths[r], c.Conversation.Rounds[r].Question, answer);
                }
            } finally {
                foreach (var p in pixels) p?.Dispose();
            }
        }
        return tokens;
    }

    string Answer(GenerationResult result)
    {
        var text = tokenizer.Decode(result.TokenIds);
        if (result.StopString is { } stop && text.IndexOf(stop, StringComparison.Ordinal) is var at and >= 0) text = text[..at];
        return text;
    }

    public static void WriteCsv(TextWriter writer, IEnumerable<EvalRow> rows)
    {
        using var csv = new CsvWriter(writer);
        csv.WriteRow("test_name", "image_path", "question", "answer");
        foreach (var row in rows) csv.WriteRow(row.TestName, row.ImagePaths, row.Question, row.Answer);
    }
}
