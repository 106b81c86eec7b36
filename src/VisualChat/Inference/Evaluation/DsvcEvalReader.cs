using System.Text.Json;
using VisualChat.Conversations;

namespace VisualChat.Inference.Evaluation;

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
