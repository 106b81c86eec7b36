using VisualChat.Inference.Generation;

namespace VisualChat.Tests.Generation;

public class StopStringMatcherTests
{
    [Fact]
    public void HoldsBackPossibleStartsAndCutsAtTheEarliestStop()
    {
        var matcher = new StopStringMatcher(["###", "END"]);
        Assert.Equal("abc", matcher.Add("abc#"));
        Assert.Equal("", matcher.Add("#"));
        Assert.Equal("##x", matcher.Add("x"));          // "##x" cannot start "###" any more
        Assert.Equal("y", matcher.Add("yE"));
        Assert.Equal("", matcher.Add("N"));
        Assert.Equal("ENz", matcher.Add("z"));
        Assert.Equal("", matcher.Add("EN"));
        Assert.Null(matcher.Found);
        Assert.Equal("EN", matcher.Flush());
    }

    [Fact]
    public void StopSpanningDeltasIsFoundAndNotReleased()
    {
        var matcher = new StopStringMatcher(["</s>", "ab"]);
        var released = matcher.Add("hello <") + matcher.Add("/") + matcher.Add("s> more");
        Assert.Equal("hello ", released);
        Assert.Equal("</s>", matcher.Found);
        Assert.Equal("", matcher.Add("again"));
        Assert.Equal("", matcher.Flush());
        var early = new StopStringMatcher(["</s>", "ab"]);
        Assert.Equal("x", early.Add("x</s>ab"));
        Assert.Equal("</s>", early.Found);
    }

    /// <summary>Two stops at the same place: the one listed first wins, and a stop found at index 0 is not displaced
    /// by one that starts later.</summary>
    [Fact]
    public void TheEarliestStopWinsAndTiesGoToTheFirstListed()
    {
        var tie = new StopStringMatcher(["xy", "x"]);
        Assert.Equal("ab", tie.Add("abxy"));
        Assert.Equal("xy", tie.Found);
        var atStart = new StopStringMatcher(["ab", "b"]);
        Assert.Equal("", atStart.Add("ab"));
        Assert.Equal("ab", atStart.Found);
    }
}
