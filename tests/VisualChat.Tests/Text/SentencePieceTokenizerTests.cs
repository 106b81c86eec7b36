using System.CommandLine;
using System.Text;
using System.Text.Json;
using VisualChat.Cli.Commands;
using VisualChat.Text;

namespace VisualChat.Tests.Text;

/// <summary>Paths of the shared LLaMA tokenizer and of this folder's fixtures (produced by make_*.py with python sentencepiece).</summary>
internal static class TokenizerTestFiles
{
    public static string RepoRoot { get; } = FindRepoRoot();
    public static string LlamaFolder => Path.Combine(RepoRoot, "..", "shared", "models", "llama2-tokenizer");
    public static string LlamaModel => Path.Combine(LlamaFolder, "tokenizer.model");
    public static string LlamaJson => Path.Combine(LlamaFolder, "tokenizer.json");
    public static string FixtureFolder => Path.Combine(RepoRoot, "tests", "VisualChat.Tests", "Text");

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "VisualChat.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"No VisualChat.sln above {AppContext.BaseDirectory}; run the tests from the repository.");
    }

    public static JsonElement ReadFixture(string name)
    {
        using var document = JsonDocument.Parse(File.ReadAllText(Path.Combine(FixtureFolder, name)));
        return document.RootElement.Clone();
    }

    public static int[] Ids(JsonElement array) => array.EnumerateArray().Select(e => e.GetInt32()).ToArray();

    public static string TempFolder(string name)
    {
        string path = Path.Combine(Path.GetTempPath(), $"visualchat-{name}-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(path);
        return path;
    }
}

public sealed class LlamaTokenizerFixture
{
    public SentencePieceTokenizer FromModel { get; } = SentencePieceTokenizer.FromFile(TokenizerTestFiles.LlamaModel);
    public SentencePieceTokenizer FromJson { get; } = SentencePieceTokenizer.FromFile(TokenizerTestFiles.LlamaJson);
    public JsonElement Expected { get; } = TokenizerTestFiles.ReadFixture("llama2_sentencepiece_ids.json");

    public IEnumerable<(string Text, int[] Ids, string Decoded)> Cases =>
        Expected.GetProperty("cases").EnumerateArray()
            .Select(c => (c.GetProperty("text").GetString()!, TokenizerTestFiles.Ids(c.GetProperty("ids")), c.GetProperty("decoded").GetString()!));
}

public sealed class SentencePieceTokenizerTests : IClassFixture<LlamaTokenizerFixture>
{
    private readonly LlamaTokenizerFixture _llama;

    public SentencePieceTokenizerTests(LlamaTokenizerFixture llama) => _llama = llama;

    private static string Describe(string text, IEnumerable<int> expected, IEnumerable<int> actual) =>
        $"{JsonSerializer.Serialize(text)}: expected [{string.Join(' ', expected)}] got [{string.Join(' ', actual)}]";

    [Fact]
    public void Encode_MatchesSentencePieceIds_ForAllFixtureStrings()
    {
        var cases = _llama.Cases.ToList();
        Assert.True(cases.Count >= 40);
        var mismatches = cases.Where(c => !_llama.FromModel.Encode(c.Text).SequenceEqual(c.Ids))
            .Select(c => Describe(c.Text, c.Ids, _llama.FromModel.Encode(c.Text))).ToList();
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
    }

    [Fact]
    public void Encode_BreaksEqualScoreTiesLeftmostFirst()
    {
        // "##" + "#" must win over "#" + "##" on equal scores; libraries that merge the rightmost pair give 835 29937.
        Assert.Equal(new[] { 29871, 13, 13, 2277, 29937, 673, 29901 }, _llama.FromModel.Encode("\n\n### Answer:"));
        Assert.Equal(new[] { 1738, 6824, 21004 }, _llama.FromModel.Encode("!!!!!!"));
    }

    [Fact]
    public void Decode_MatchesSentencePieceDecode_AndRoundTrips()
    {
        foreach (var (text, ids, decoded) in _llama.Cases)
        {
            Assert.Equal(decoded, _llama.FromModel.Decode(ids));
            Assert.Equal(decoded, _llama.FromJson.Decode(ids));
            // Only text that already contains "▁" cannot come back unchanged (SentencePiece decodes "▁" as a space).
            if (!text.Contains('\u2581')) Assert.Equal(text, _llama.FromModel.Decode(_llama.FromModel.Encode(text)));
        }
    }

    [Fact]
    public void SpecialIds_AreLlamaBosEos()
    {
        var tokenizer = _llama.FromModel;
        Assert.Equal(1, tokenizer.BosId);
        Assert.Equal(2, tokenizer.EosId);
        Assert.Equal(-1, tokenizer.PadId);
        Assert.Equal(32000, tokenizer.VocabSize);
        Assert.Equal(new[] { 1, 15043, 3186, 2 }, tokenizer.Encode("Hello world", addBos: true, addEos: true));
        Assert.Equal("Hello world", tokenizer.Decode([1, 15043, 3186, 2]));
        Assert.Equal("<s>Hello world</s>", tokenizer.Decode([1, 15043, 3186, 2], skipSpecialTokens: false));
        Assert.Equal(1, tokenizer.TokenToId("<s>"));
        Assert.Equal(13, tokenizer.TokenToId("<0x0A>"));
        Assert.Null(tokenizer.TokenToId("no such piece"));
        Assert.Empty(tokenizer.Encode(""));
    }

    [Fact]
    public void TokenizerJson_GivesSameIdsAsModel()
    {
        Assert.Equal(_llama.FromModel.BaseVocabSize, _llama.FromJson.BaseVocabSize);
        // Texts spelling <s>, </s> or <unk> are left out: tokenizer.json lists them as added tokens, so HF matches them
        // literally there (see TokenizerJson_MatchesItsSpecialTokensLiterally) while plain SentencePiece spells them out.
        var mismatches = _llama.Cases.Where(c => !c.Text.Contains("<s>") && !c.Text.Contains("</s>") && !c.Text.Contains("<unk>"))
            .Where(c => !_llama.FromJson.Encode(c.Text).SequenceEqual(c.Ids))
            .Select(c => Describe(c.Text, c.Ids, _llama.FromJson.Encode(c.Text))).ToList();
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
        Assert.Equal(_llama.FromModel.BosId, _llama.FromJson.BosId);
        Assert.Equal(_llama.FromModel.EosId, _llama.FromJson.EosId);
    }

    [Fact]
    public void TokenizerJson_MatchesItsSpecialTokensLiterally()
    {
        Assert.Equal(new[] { 15043, 2 }, _llama.FromJson.Encode("Hello</s>"));
        var spelledOut = _llama.FromModel.Encode("Hello</s>");
        Assert.Equal(4, spelledOut.Count);
        Assert.DoesNotContain(2, spelledOut);
    }

    [Fact]
    public void TokenizerJson_AcceptsMergesAsStringsAndAsPairs()
    {
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(TokenizerTestFiles.LlamaJson))!;
        var merges = json["model"]!["merges"]!.AsArray();
        var asStrings = new System.Text.Json.Nodes.JsonArray(merges.Select(m => (System.Text.Json.Nodes.JsonNode?)$"{m![0]} {m[1]}").ToArray());
        json["model"]!["merges"] = asStrings;
        var fromStrings = HuggingFaceTokenizerJson.Parse(json.ToJsonString(), "merges-as-strings");
        foreach (var (text, ids, _) in _llama.Cases.Where(c => !c.Text.Contains("<s>")).Take(25)) Assert.Equal(ids, fromStrings.Encode(text));
    }

    [Fact]
    public void AddedImageToken_EncodesLikeHfLegacyLlamaTokenizer_AndLeavesOtherIdsAlone()
    {
        var tokenizer = SentencePieceTokenizer.FromFile(TokenizerTestFiles.LlamaModel);
        Assert.Equal(1, tokenizer.AddSpecialTokens(["<image>"]));
        Assert.Equal(0, tokenizer.AddSpecialTokens(["<image>"]));
        Assert.Equal(32000, tokenizer.TokenToId("<image>"));
        Assert.Equal(32001, tokenizer.VocabSize);
        foreach (var prompt in _llama.Expected.GetProperty("image_token_prompts").EnumerateArray())
        {
            string text = prompt.GetProperty("text").GetString()!;
            var expected = TokenizerTestFiles.Ids(prompt.GetProperty("legacy_ids"));
            var ids = tokenizer.Encode(text);
            Assert.True(expected.SequenceEqual(ids), Describe(text, expected, ids));
            Assert.Equal(text, tokenizer.Decode(ids, skipSpecialTokens: false));
        }
        foreach (var (text, ids, _) in _llama.Cases.Where(c => !c.Text.Contains("<image>")))
            Assert.Equal(ids, tokenizer.Encode(text));
    }

    [Fact]
    public void AddedImageToken_NonLegacyMode_PrefixesOnlyTheStartOfText()
    {
        var tokenizer = SentencePieceTokenizer.FromFile(TokenizerTestFiles.LlamaModel);
        tokenizer.AddSpecialTokens(["<image>"]);
        tokenizer.DummyPrefixOnEverySegment = false;
        foreach (var prompt in _llama.Expected.GetProperty("image_token_prompts").EnumerateArray())
        {
            string text = prompt.GetProperty("text").GetString()!;
            var expected = TokenizerTestFiles.Ids(prompt.GetProperty("non_legacy_ids"));
            var ids = tokenizer.Encode(text);
            Assert.True(expected.SequenceEqual(ids), Describe(text, expected, ids));
            Assert.Equal(text, tokenizer.Decode(ids, skipSpecialTokens: false));
        }
    }

    [Fact]
    public void FromFolder_FollowsTheLegacyFlagOfTokenizerConfig_AndSaveKeepsIt()
    {
        // The shared LLaMA-2 folder's tokenizer_config.json says "legacy": false.
        var tokenizer = TokenizerFactory.FromFolder(Path.GetDirectoryName(TokenizerTestFiles.LlamaModel)!);
        Assert.False(tokenizer.DummyPrefixOnEverySegment);
        tokenizer.AddSpecialTokens(["<image>"]);
        var prompt = _llama.Expected.GetProperty("image_token_prompts").EnumerateArray().First();
        Assert.Equal(TokenizerTestFiles.Ids(prompt.GetProperty("non_legacy_ids")), tokenizer.Encode(prompt.GetProperty("text").GetString()!));

        var folder = Directory.CreateTempSubdirectory("tok-legacy").FullName;
        try
        {
            tokenizer.Save(folder);
            Assert.False(TokenizerFactory.FromFolder(folder).DummyPrefixOnEverySegment);
            var legacy = SentencePieceTokenizer.FromFile(TokenizerTestFiles.LlamaModel);
            legacy.Save(folder);
            Assert.True(TokenizerFactory.FromFolder(folder).DummyPrefixOnEverySegment);
        }
        finally { Directory.Delete(folder, true); }
    }

    [Fact]
    public void AddedTokens_SkipSpecialOnDecode_KeepOrdinaryOnes()
    {
        var tokenizer = SentencePieceTokenizer.FromFile(TokenizerTestFiles.LlamaModel);
        tokenizer.AddSpecialTokens(["<image>"]);
        tokenizer.AddTokens(["<im_patch>"]);
        Assert.Equal(32001, tokenizer.TokenToId("<im_patch>"));
        var ids = tokenizer.Encode("a<image>b<im_patch>c");
        Assert.Equal("ab<im_patch>c", tokenizer.Decode(ids));
        Assert.Equal("a<image>b<im_patch>c", tokenizer.Decode(ids, skipSpecialTokens: false));
    }

    [Fact]
    public void Folder_SaveAndLoad_RoundTripsAddedTokens()
    {
        var tokenizer = SentencePieceTokenizer.FromFile(TokenizerTestFiles.LlamaModel);
        tokenizer.AddSpecialTokens(["<image>"]);
        tokenizer.AddTokens(["<im_patch>"]);
        string folder = TokenizerTestFiles.TempFolder("tokenizer-folder");
        try
        {
            tokenizer.Save(folder);
            Assert.Equal(File.ReadAllBytes(TokenizerTestFiles.LlamaModel), File.ReadAllBytes(Path.Combine(folder, "tokenizer.model")));
            var added = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "added_tokens.json"))).RootElement;
            Assert.Equal(32000, added.GetProperty("<image>").GetInt32());
            var reloaded = TokenizerFactory.FromFolder(folder);
            Assert.Equal(32002, reloaded.VocabSize);
            Assert.Equal(32001, reloaded.TokenToId("<im_patch>"));
            Assert.Equal(tokenizer.AddedTokens.Select(t => (t.Content, t.Id, t.Special)),
                reloaded.AddedTokens.Select(t => (t.Content, t.Id, t.Special)));
            const string prompt = "### Image 1:\n<image>\n<im_patch>### Question: why?";
            Assert.Equal(tokenizer.Encode(prompt), reloaded.Encode(prompt));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void FromFolder_UsesSharedLlamaFolder_WithItsSpecialTokens()
    {
        var tokenizer = TokenizerFactory.FromFolder(TokenizerTestFiles.LlamaFolder);
        Assert.Equal(32000, tokenizer.VocabSize);
        Assert.Equal(new[] { 15043, 2 }, tokenizer.Encode("Hello</s>"));
        foreach (var (text, ids, _) in _llama.Cases.Where(c => !c.Text.Contains("<s>") && !c.Text.Contains("</s>")))
            Assert.Equal(ids, tokenizer.Encode(text));
    }

    [Fact]
    public void ModelFile_SavesByteIdentical_AndReloads()
    {
        byte[] original = File.ReadAllBytes(TokenizerTestFiles.LlamaModel);
        var model = SentencePieceModel.Parse(original, TokenizerTestFiles.LlamaModel);
        Assert.Equal(32000, model.Pieces.Count);
        Assert.Equal(SentencePieceModelType.Bpe, model.TrainerSpec.ModelType);
        Assert.True(model.TrainerSpec.ByteFallback);
        Assert.Equal(-1, model.TrainerSpec.PadId);
        Assert.False(model.NormalizerSpec.RemoveExtraWhitespaces);
        Assert.True(model.NormalizerSpec.AddDummyPrefix);
        Assert.Equal(SentencePieceType.Byte, model.Pieces[13].Type);
        Assert.Equal(-1f, model.Pieces[260].Score);
        Assert.Equal(original, model.ToBytes());
    }

    [Fact]
    public void ModelFile_ReportsDamagedData()
    {
        var error = Assert.Throws<InvalidDataException>(() => SentencePieceModel.Parse(File.ReadAllBytes(TokenizerTestFiles.LlamaModel).AsSpan(0, 1000), "cut.model"));
        Assert.Contains("cut.model", error.Message);
        var missing = Assert.Throws<FileNotFoundException>(() => SentencePieceTokenizer.FromFile("/nonexistent/tokenizer.model"));
        Assert.Contains("/nonexistent/tokenizer.model", missing.Message);
    }

    [Fact]
    public void LongText_EncodesWithoutQuadraticBlowUp()
    {
        var paragraph = _llama.Cases.Last().Text;
        var builder = new StringBuilder();
        while (builder.Length < 100_000) builder.Append(paragraph).Append('\n');
        string text = builder.ToString();
        var ids = _llama.FromModel.Encode(text);
        Assert.InRange(ids.Count, text.Length / 8, text.Length);
        Assert.Equal(text, _llama.FromModel.Decode(ids));
        Assert.Equal(ids, _llama.FromJson.Encode(text));
        // One 100k-character word is the worst case for merge bookkeeping.
        var word = new string('a', 100_000);
        Assert.Equal(word, _llama.FromModel.Decode(_llama.FromModel.Encode(word)));
    }

    [Fact]
    public void TokenizeCommand_PrintsIds_AndNamesMissingPath()
    {
        var root = new RootCommand { TokenizeCommand.Create() };
        var output = new StringWriter();
        var error = new StringWriter();
        var configuration = new InvocationConfiguration { Output = output, Error = error };
        int rc = root.Parse(["tokenize", "--tokenizer", TokenizerTestFiles.LlamaFolder, "\n\n### Answer:"]).Invoke(configuration);
        Assert.Equal(0, rc);
        Assert.Equal("29871 13 13 2277 29937 673 29901", output.ToString().Trim());

        rc = root.Parse(["tokenize", "--tokenizer", "/nonexistent/tok.model", "hi"]).Invoke(configuration);
        Assert.NotEqual(0, rc);
        Assert.Contains("/nonexistent/tok.model", error.ToString());
    }
}
