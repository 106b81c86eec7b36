using VisualChat.Inference.Generation;
using VisualChat.Model.Presets;

namespace VisualChat.Tests.Generation;

public class IncrementalDetokenizerTests
{
    [Fact]
    public void HoldsBackSplitCharactersAndKeepsLeadingSpaces()
    {
        var tokenizer = TinyTokenizer.Build();
        var prompt = tokenizer.Encode("The", addBos: true);
        var decoder = new IncrementalDetokenizer(ids => tokenizer.Decode(ids), prompt);
        var streamed = new List<string>();
        // SentencePiece's dummy prefix makes "cat" start with "▁": the stream must show it as the space after "The".
        foreach (var id in tokenizer.Encode("cat ✓ done")) streamed.Add(decoder.Add(id));
        streamed.Add(decoder.Flush());
        Assert.Equal(" cat ✓ done", string.Concat(streamed));
        Assert.DoesNotContain(streamed, s => s.Contains('\uFFFD'));
        // ✓ is three byte tokens (not in the tiny vocabulary): the first two emit nothing.
        Assert.Equal(3, tokenizer.Encode("cat ✓ done").Count(id => tokenizer.IdToPiece(id).StartsWith("<0x", StringComparison.Ordinal)));
        Assert.True(streamed.Count(s => s.Length == 0) >= 2);
    }

    [Fact]
    public void WithoutContextTheFirstLeadingSpaceIsDroppedAsWhenDecodingTheAnswerAlone()
    {
        var tokenizer = TinyTokenizer.Build();
        var decoder = new IncrementalDetokenizer(ids => tokenizer.Decode(ids));
        var ids = tokenizer.Encode("cat done");
        Assert.Equal(tokenizer.Decode(ids), string.Concat(ids.Select(decoder.Add)) + decoder.Flush());
        Assert.StartsWith("cat", tokenizer.Decode(ids));
    }

    /// <summary>A stream that ends inside a character: Flush gives only what is held back (the decoder's U+FFFD), not
    /// text that was already emitted.</summary>
    [Fact]
    public void FlushReturnsOnlyTheHeldBackTail()
    {
        var tokenizer = TinyTokenizer.Build();
        var decoder = new IncrementalDetokenizer(ids => tokenizer.Decode(ids), tokenizer.Encode("The", addBos: true));
        // "▁cat" then the three bytes of ✓ (no space between: the window before the held bytes decodes to " cat").
        var ids = tokenizer.Encode("cat✓");
        var emitted = string.Concat(ids.Take(ids.Count - 1).Select(decoder.Add));   // the last byte of ✓ never arrives
        var tail = decoder.Flush();
        Assert.Equal(" cat", emitted);
        Assert.Equal("\uFFFD", tail);
        Assert.Equal("", decoder.Flush());
    }
}
