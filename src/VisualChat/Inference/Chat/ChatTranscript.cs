using System.Text.Json;
using System.Text.Json.Serialization;

namespace VisualChat.Inference.Chat;

/// <summary>A saved conversation (<c>/save</c>, <c>/load</c>): per round the images it introduced (as the paths, URLs or
/// data URIs the user gave), the question and the answer. Loading replays it through the model.</summary>
public sealed class ChatTranscript
{
    public const string FormatName = "visualchat-conversation/1";

    /// <summary>Always <see cref="FormatName"/> once saved; a file without it is not one of ours.</summary>
    [JsonPropertyName("format")] public string? Format { get; set; }
    [JsonPropertyName("model")] public string? Model { get; set; }
    [JsonPropertyName("system")] public string? System { get; set; }
    [JsonPropertyName("rounds")] public List<ChatTranscriptRound> Rounds { get; set; } = [];

    static readonly JsonSerializerOptions Options = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    public void Save(string path)
    {
        Format = FormatName;
        var temp = path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(this, Options));
        File.Move(temp, path, overwrite: true);
    }

    public static ChatTranscript Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Conversation file '{path}' does not exist.", path);
        ChatTranscript? transcript;
        try { transcript = JsonSerializer.Deserialize<ChatTranscript>(File.ReadAllText(path), Options); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a saved conversation ({e.Message}).", e); }
        if (transcript is null || transcript.Format != FormatName)
            throw new InvalidDataException($"{path}: not a saved conversation (expected \"format\": \"visualchat-conversation/1\").");
        for (int i = 0; i < transcript.Rounds.Count; i++)
        {
            if (string.IsNullOrEmpty(transcript.Rounds[i].Question))
                throw new InvalidDataException($"{path}: round {i + 1} has no question.");
        }

        return transcript;
    }
}

public sealed class ChatTranscriptRound
{
    [JsonPropertyName("images")] public List<string> Images { get; set; } = [];
    [JsonPropertyName("question")] public string Question { get; set; } = "";
    [JsonPropertyName("answer")] public string? Answer { get; set; }
    /// <summary>The answer's token ids as generated (EOS included), so loading restores the exact cache; optional.</summary>
    [JsonPropertyName("answer_ids")] public List<int>? AnswerIds { get; set; }
}
