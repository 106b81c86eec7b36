using System.Text.Json;

namespace VisualChat.Text;

/// <summary>
/// Loads a HuggingFace <c>tokenizer.json</c> of the LLaMA kind — model BPE with byte_fallback, normalizer
/// Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer — into a <see cref="SentencePieceTokenizer"/> that encodes with
/// the file's merge ranks (giving the same ids as the SentencePiece model it was converted from).
/// </summary>
public static class HuggingFaceTokenizerJson
{
    public static SentencePieceTokenizer Load(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"tokenizer.json '{path}' does not exist; pass the path of a HuggingFace tokenizer.json file.", path);
        string json = File.ReadAllText(path);
        try
        {
            return Parse(json, path);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message}); expected a HuggingFace tokenizer.json.", e);
        }
    }

    /// <param name="source">Names the data in error messages (usually the file path).</param>
    public static SentencePieceTokenizer Parse(string json, string source = "tokenizer.json")
    {
        using var document = JsonDocument.Parse(json);
        var root = document.RootElement;
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{source}: no \"model\" object; expected a HuggingFace tokenizer.json.");
        string modelType = model.TryGetProperty("type", out var typeElement) ? typeElement.GetString() ?? "" : "";
        if (modelType != "BPE")
            throw new NotSupportedException($"{source}: model type '{modelType}' is not supported; only BPE (LLaMA) tokenizer.json files are.");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in model.GetProperty("vocab").EnumerateObject()) vocab[entry.Name] = entry.Value.GetInt32();
        var pieces = new string?[vocab.Count];
        foreach (var (piece, id) in vocab)
        {
            if ((uint)id >= (uint)pieces.Length || pieces[id] is not null)
                throw new InvalidDataException($"{source}: vocab ids must be 0..{pieces.Length - 1} without repeats; '{piece}' has id {id}.");
            pieces[id] = piece;
        }

        var merges = new Dictionary<long, (int Rank, int MergedId)>();
        int rank = 0;
        foreach (var merge in model.GetProperty("merges").EnumerateArray())
        {
            string left, right;
            if (merge.ValueKind == JsonValueKind.String)
            {
                var parts = merge.GetString()!.Split(' ');
                if (parts.Length != 2)
                    throw new InvalidDataException($"{source}: merge {rank} '{merge.GetString()}' is not two pieces separated by one space.");
                (left, right) = (parts[0], parts[1]);
            }
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2)
            {
                (left, right) = (merge[0].GetString()!, merge[1].GetString()!);
            }
            else
            {
                throw new InvalidDataException($"{source}: merge {rank} is neither \"a b\" nor [\"a\", \"b\"].");
            }

            if (!vocab.TryGetValue(left, out int leftId) || !vocab.TryGetValue(right, out int rightId) || !vocab.TryGetValue(left + right, out int mergedId))
                throw new InvalidDataException($"{source}: merge {rank} ('{left}' + '{right}') uses a piece missing from the vocab.");
            merges.TryAdd(MergeRankBpeEncoder.PairKey(leftId, rightId), (rank, mergedId));
            rank++;
        }

        bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;
        bool fuseUnknown = model.TryGetProperty("fuse_unk", out var fu) && fu.ValueKind == JsonValueKind.True;
        string? unkToken = model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String ? unk.GetString() : null;
        int unkId = unkToken is not null && vocab.TryGetValue(unkToken, out int u) ? u : -1;

        var (addDummyPrefix, escapeWhitespaces) = ReadNormalizer(root, source);
        if (root.TryGetProperty("pre_tokenizer", out var preTokenizer) && preTokenizer.ValueKind != JsonValueKind.Null)
            throw new NotSupportedException($"{source}: a pre_tokenizer is set; only LLaMA-style files (normalizer Prepend+Replace, pre_tokenizer null) are supported.");

        var specialInVocab = new HashSet<int>();
        var addedTokens = new List<(string Content, int Id, bool Special)>();
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
        {
            foreach (var token in added.EnumerateArray())
            {
                var entry = (token.GetProperty("content").GetString()!, token.GetProperty("id").GetInt32(),
                    token.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True);
                addedTokens.Add(entry);
                if (entry.Item3 && entry.Item2 < pieces.Length) specialInVocab.Add(entry.Item2);
            }
        }

        var types = new SentencePieceType[pieces.Length];
        for (int id = 0; id < pieces.Length; id++)
        {
            types[id] = id == unkId ? SentencePieceType.Unknown
                : specialInVocab.Contains(id) ? SentencePieceType.Control
                : IsBytePiece(pieces[id]!) ? SentencePieceType.Byte
                : SentencePieceType.Normal;
        }

        var encoder = new MergeRankBpeEncoder(vocab, merges, unkId, byteFallback, fuseUnknown);
        int bosId = vocab.TryGetValue("<s>", out int b) ? b : -1;
        int eosId = vocab.TryGetValue("</s>", out int e) ? e : -1;
        var tokenizer = new SentencePieceTokenizer(encoder, pieces!, types, bosId, eosId, padId: -1, addDummyPrefix,
            removeExtraWhitespaces: false, escapeWhitespaces, model: null, tokenizerJson: json);
        foreach (var (content, id, special) in addedTokens.OrderBy(t => t.Id)) tokenizer.AddTokenWithId(content, id, special, source);
        return tokenizer;
    }

    private static (bool AddDummyPrefix, bool EscapeWhitespaces) ReadNormalizer(JsonElement root, string source)
    {
        if (!root.TryGetProperty("normalizer", out var normalizer) || normalizer.ValueKind == JsonValueKind.Null) return (false, false);
        var steps = normalizer.GetProperty("type").GetString() == "Sequence"
            ? normalizer.GetProperty("normalizers").EnumerateArray().ToList()
            : [normalizer];
        bool prepend = false, escape = false;
        foreach (var step in steps)
        {
            string type = step.GetProperty("type").GetString() ?? "";
            if (type == "Prepend" && step.GetProperty("prepend").GetString() == "\u2581" && !escape)
            {
                prepend = true;
            }
            else if (type == "Replace" && step.GetProperty("pattern").TryGetProperty("String", out var pattern) && pattern.GetString() == " "
                     && step.GetProperty("content").GetString() == "\u2581")
            {
                escape = true;
            }
            else
            {
                throw new NotSupportedException($"{source}: normalizer step {step.GetRawText()} is not supported; only LLaMA's Prepend(\"▁\") then Replace(\" \", \"▁\") is.");
            }
        }
        return (prepend, escape);
    }

    private static bool IsBytePiece(string piece) =>
        piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>' && Uri.IsHexDigit(piece[3]) && Uri.IsHexDigit(piece[4]);
}
