using System.Diagnostics;
using VisualChat.Conversations;
using VisualChat.Inference.Chat;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;

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
/// earlier answers as history. Conversations are decoded several at a time (sequences of one running batch of the
/// generation engine, each with its own cache); results keep the input order.
/// </summary>
/// <param name="processor">Tokenizer, template and image preprocessing; null: <see cref="VisualChatProcessor.From"/> the model.</param>
public sealed class DsvcEvaluation(VisualChatModel model, GenerationOptions options, int batchSize = 4, VisualChatProcessor? processor = null)
{
    readonly VisualChatProcessor roundProcessor = processor ?? VisualChatProcessor.From(model);

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
        {
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
        var engine = new GenerationEngine(model, roundProcessor.Tokenizer);
        long tokens = 0;
        long maxContext = model.LmConfig.MaxPositionEmbeddings;
        foreach (var i in indices) results[i] = new EvalRow[roundCount];
        var states = indices.Select(_ => model.CreateConversation(1, Math.Min(512, maxContext))).ToArray();
        try {
            for (int r = 0; r < roundCount; r++) {
                var prompts = new DecoderPrompt[batch];
                try {
                    var requests = new GenerationRequest[batch];
                    for (int b = 0; b < batch; b++) {
                        var sofar = conversations[b].TakeRounds(r + 1);
                        var images = sofar.Rounds[r].NewImages.OfType<FileImageRef>().Select(i => ImageLoader.Load(i.Path)).ToList();
                        prompts[b] = roundProcessor.ProcessRound(sofar, images, lacksEos[b]);
                        long room = maxContext - states[b].Length - model.PromptPositions(prompts[b].Ids.Count, images.Count);
                        if (room < 1) throw new ContextFullException(maxContext - room + 1, maxContext);
                        // Answers stay in the cache: the next round continues after them.
                        requests[b] = new GenerationRequest(states[b], prompts[b], options with { MaxNewTokens = (int)Math.Min(options.MaxNewTokens, room) }) { KeepFinalToken = true };
                    }
                    var generated = engine.Generate(requests);
                    for (int b = 0; b < batch; b++) {
                        var answer = generated[b].Text ?? "";
                        tokens += generated[b].TokenIds.Count;
                        lacksEos[b] = generated[b].FinishReason != FinishReason.EndOfSequence;
                        conversations[b] = conversations[b].WithAnswer(r, answer);
                        var c = cases[indices[b]];
                        results[indices[b]][r] = new EvalRow(c.TestName, c.RoundImagePaths[r], c.Conversation.Rounds[r].Question, answer);
                    }
                } finally {
                    foreach (var p in prompts) p?.Pixels?.Dispose();
                }
            }
        } finally {
            foreach (var state in states) state.Dispose();
        }
        return tokens;
    }

    public static void WriteCsv(TextWriter writer, IEnumerable<EvalRow> rows)
    {
        using var csv = new CsvWriter(writer);
        csv.WriteRow("test_name", "image_path", "question", "answer");
        foreach (var row in rows) csv.WriteRow(row.TestName, row.ImagePaths, row.Question, row.Answer);
    }
}
