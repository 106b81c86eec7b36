using System.Text.Json;
using VisualChat.Text;

namespace VisualChat.Tests.Text;

/// <summary>A tokenizer.model written by <see cref="SentencePieceModelBuilder"/> must load in python sentencepiece and give
/// the same ids there (tiny_model_sentencepiece_ids.json, produced by make_tiny_fixture.py from the file this test writes).</summary>
public sealed class TinyModelTests
{
    /// <summary>Where to keep the written models for make_tiny_fixture.py (set it to regenerate the fixture); otherwise
    /// each test writes under its own temporary folder, deleted afterwards.</summary>
    public const string KeepModelsVariable = "VISUALCHAT_TINY_TOKENIZER_OUT";

    public static SentencePieceModel BuildTinyModel() => SentencePieceModelBuilder.CreateByteFallbackBpe(
    [
        ("▁t", -1f), ("he", -1f), ("▁the", -2f), ("an", -3f), ("at", -3f), ("▁an", -4f), ("▁and", -5f), ("▁c", -6f),
        ("▁cat", -7f), ("!!", -8f), ("!!!", -9f), ("aa", -10f), ("aaa", -10f), ("▁", -50f),
        ("t", -100f), ("h", -100f), ("e", -100f), ("a", -100f), ("n", -100f), ("d", -100f), ("c", -100f), ("o", -100f),
        ("g", -100f), ("!", -100f), ("l", -100f), ("s", -100f),
    ]);

    /// <summary>The variants make_tiny_fixture.py reads: LLaMA settings, squeezed whitespace, and no byte fallback
    /// (unknown characters become &lt;unk&gt;, runs of them fused).</summary>
    public static SentencePieceModel BuildVariant(string variant)
    {
        var model = BuildTinyModel();
        if (variant == "squeeze_whitespace") model.NormalizerSpec.RemoveExtraWhitespaces = true;
        if (variant == "no_byte_fallback")
        {
            // sentencepiece refuses byte pieces in a model without byte fallback.
            model.TrainerSpec.ByteFallback = false;
            model.Pieces.RemoveAll(p => p.Type == SentencePieceType.Byte);
            model.TrainerSpec.VocabSize = model.Pieces.Count;
        }
        return model;
    }

    [Theory]
    [InlineData("llama_like")]
    [InlineData("squeeze_whitespace")]
    [InlineData("no_byte_fallback")]
    public void BuiltModel_SavesLoadsAndMatchesPythonSentencePiece(string variant)
    {
        var model = BuildVariant(variant);
        using var temp = new VisualChat.Tests.Model.TempFolder();
        string folder = Environment.GetEnvironmentVariable(KeepModelsVariable) is { Length: > 0 } keep ? keep : temp.Path;
        string path = Path.Combine(folder, variant + ".model");
        Directory.CreateDirectory(folder);
        model.Save(path);
        var reloaded = SentencePieceModel.Load(path);
        Assert.Equal(model.Pieces, reloaded.Pieces);
        Assert.Equal(File.ReadAllBytes(path), reloaded.ToBytes());

        var tokenizer = SentencePieceTokenizer.FromFile(path);
        Assert.Equal(model.Pieces.Count, tokenizer.VocabSize);
        var expected = TokenizerTestFiles.ReadFixture("tiny_model_sentencepiece_ids.json").GetProperty(variant);
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
