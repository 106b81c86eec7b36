using System.Text.Json;

namespace VisualChat.Text;

/// <summary>Opens the tokenizer stored in a model folder the way HuggingFace's LlamaTokenizer would.</summary>
public static class TokenizerFactory
{
    public const string ModelFileName = "tokenizer.model";
    public const string JsonFileName = "tokenizer.json";
    public const string AddedTokensFileName = "added_tokens.json";
    public const string ConfigFileName = "tokenizer_config.json";

    /// <summary>
    /// Loads <c>tokenizer.model</c>, else <c>tokenizer.json</c>, from <paramref name="directory"/>, then applies the added
    /// tokens of <c>added_tokens.json</c> (content → id) and of <c>tokenizer_config.json</c>'s <c>added_tokens_decoder</c>
    /// (id → content and special flag). As in HF, tokens listed there that are already in the vocabulary (e.g. &lt;s&gt;)
    /// become literal matches: the text "&lt;/s&gt;" then encodes to the EOS id. <c>"legacy": false</c> in
    /// <c>tokenizer_config.json</c> selects the non-legacy rule for text after an added token
    /// (<see cref="SentencePieceTokenizer.DummyPrefixOnEverySegment"/>).
    /// </summary>
    public static SentencePieceTokenizer FromFolder(string directory)
    {
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"Tokenizer folder '{directory}' does not exist.");
        string modelPath = Path.Combine(directory, ModelFileName);
        string jsonPath = Path.Combine(directory, JsonFileName);
        var tokenizer = File.Exists(modelPath) ? SentencePieceTokenizer.FromFile(modelPath)
            : File.Exists(jsonPath) ? HuggingFaceTokenizerJson.Load(jsonPath)
            : throw new FileNotFoundException($"Tokenizer folder '{directory}' has neither {ModelFileName} nor {JsonFileName}.", modelPath);

        var entries = new SortedDictionary<int, (string Content, bool Special, string Source)>();
        string addedPath = Path.Combine(directory, AddedTokensFileName);
        if (File.Exists(addedPath))
        {
            foreach (var property in ReadObject(addedPath).EnumerateObject())
                entries[property.Value.GetInt32()] = (property.Name, false, addedPath);
        }

        string configPath = Path.Combine(directory, ConfigFileName);
        var config = File.Exists(configPath) ? ReadObject(configPath) : default;
        // HF LlamaTokenizer: "legacy": false means text after an added token gets no dummy-prefix space.
        if (config.ValueKind == JsonValueKind.Object && config.TryGetProperty("legacy", out var legacy) && legacy.ValueKind == JsonValueKind.False)
            tokenizer.DummyPrefixOnEverySegment = false;
        if (config.ValueKind == JsonValueKind.Object && config.TryGetProperty("added_tokens_decoder", out var decoder) && decoder.ValueKind == JsonValueKind.Object)
        {
            foreach (var property in decoder.EnumerateObject())
            {
                if (!int.TryParse(property.Name, out int id))
                    throw new InvalidDataException($"{configPath}: added_tokens_decoder key '{property.Name}' is not a token id.");
                string content = property.Value.GetProperty("content").GetString()
                    ?? throw new InvalidDataException($"{configPath}: added_tokens_decoder entry {id} has no content.");
                bool special = property.Value.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                if (entries.TryGetValue(id, out var earlier) && earlier.Content != content)
                    throw new InvalidDataException($"{configPath}: token id {id} is '{content}' but {earlier.Source} says '{earlier.Content}'.");
                entries[id] = (content, special, configPath);
            }
        }

        foreach (var (id, entry) in entries) tokenizer.AddTokenWithId(entry.Content, id, entry.Special, entry.Source);
        return tokenizer;
    }

    /// <summary>A tokenizer.model / tokenizer.json file, or a folder holding one (with its added tokens).</summary>
    public static SentencePieceTokenizer FromPath(string path)
    {
        if (Directory.Exists(path)) return FromFolder(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Tokenizer '{path}' does not exist; pass a tokenizer.model, a tokenizer.json or a folder holding one.", path);
        return SentencePieceTokenizer.FromFile(path);
    }

    private static JsonElement ReadObject(string path)
    {
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(path));
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{path}: expected a JSON object.");
            return document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message}).", e);
        }
    }
}
