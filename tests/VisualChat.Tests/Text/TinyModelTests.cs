using System.Text.Json;
using VisualChat.Text;

namespace VisualChat.Tests.Text;

/// <summary>A tokenizer.model written by <see cref="SentencePieceModelBuilder"/> must load in python sentencepiece and give
/// the same ids there (tiny_model_sentencepiece_ids.json, produced by make_tiny_fixture.py from the file this test writes).</summary>
public sealed class TinyModelTests
{
    /// <summary>Fixed place for the written model, so make_tiny_fixture.py can read it after a test run.</summary>
    public static readonly string WrittenModelPath = Path.Combine(Path.GetTempPath(), "visualchat-tiny-tokenizer", "tokenizer.model");

    public static SentencePieceModel BuildTinyModel() => SentencePieceModelBuilder.CreateByteFallbackBpe(
    [
        ("▁t", -1f), ("he", -1f), ("▁the", -2f), ("an", -3f), ("at", -3f), ("▁an", -4f), ("▁and", -5f), ("▁c", -6f),
        ("▁cat", -7f), ("!!", -8f), ("!!!", -9f), ("aa", -10f), ("aaa", -10f), ("▁", -50f),
        ("t", -100f), ("h", -100f), ("e", -100f), ("a", -100f), ("n", -100f), ("d", -100f), ("c", -100f), ("o", -100f),
        ("g", -100f), ("!", -100f), ("l", -100f), ("s", -100f),
    ]);

    [Fact]
    public void BuiltModel_SavesLoadsAndMatchesPythonSentencePiece()
    {
        var model = BuildTinyModel();
        Directory.CreateDirectory(Path.GetDirectoryName(WrittenModelPath)!);
        model.Save(WrittenModelPath);
        var reloaded = SentencePieceModel.Load(WrittenModelPath);
        Assert.Equal(model.Pieces, reloaded.Pieces);
        Assert.Equal(File.ReadAllBytes(WrittenModelPath), reloaded.ToBytes());

        var tokenizer = SentencePieceTokenizer.FromFile(WrittenModelPath);
        Assert.Equal(SentencePieceModelBuilder.ReservedCount + 26, tokenizer.VocabSize);
        var expected = TokenizerTestFiles.ReadFixture("tiny_model_sentencepiece_ids.json");
        Assert.Equal(tokenizer.VocabSize, expected.GetProperty("vocab_size").GetInt32());
        foreach (var item in expected.GetProperty("cases").EnumerateArray())
        {
            string text = item.GetProperty("text").GetString()!;
            var ids = TokenizerTestFiles.Ids(item.GetProperty("ids"));
            Assert.True(ids.SequenceEqual(tokenizer.Encode(text)),
                $"{JsonSerializer.Serialize(text)}: expected [{string.Join(' ', ids)}] got [{string.Join(' ', tokenizer.Encode(text))}]");
            Assert.Equal(item.GetProperty("decoded").GetString(), tokenizer.Decode(ids));
        }
    }

    [Fact]
    public void Builder_RejectsDuplicatePieces()
    {
        var error = Assert.Throws<ArgumentException>(() => SentencePieceModelBuilder.CreateByteFallbackBpe(["ab", "a", "ab"]));
        Assert.Contains("'ab'", error.Message);
    }
}
