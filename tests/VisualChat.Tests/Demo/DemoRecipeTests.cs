using VisualChat.Demo;

namespace VisualChat.Tests.Demo;

public class DemoRecipeTests
{
    [Fact]
    public void OverridesSetNumbersBooleansAndTextByCaseInsensitiveName()
    {
        var recipe = DemoRecipe.Default().With(["chatsteps=17", "DescribeWithAnswerTokens=true", "SystemPrompt=You see shapes.", "LmLearningRate=0.01"]);
        Assert.Equal(17, recipe.ChatSteps);
        Assert.True(recipe.DescribeWithAnswerTokens);
        Assert.Equal("You see shapes.", recipe.SystemPrompt);
        Assert.Equal(0.01, recipe.LmLearningRate);
        Assert.Equal(DemoRecipe.Default().LmSteps, recipe.LmSteps);
    }

    [Fact]
    public void UnknownNamesAndWrongTypesAreErrorsNamingTheOverride()
    {
        var unknown = Assert.Throws<ArgumentException>(() => DemoRecipe.Default().With(["ChatStep=3"]));
        Assert.Contains("ChatStep", unknown.Message);
        Assert.Contains("ChatSteps", unknown.Message);
        Assert.Throws<ArgumentException>(() => DemoRecipe.Default().With(["ChatSteps=many"]));
        Assert.Throws<ArgumentException>(() => DemoRecipe.Default().With(["ChatSteps"]));
    }

    [Fact]
    public void StageCacheKeysChangeWithEverySetting()
    {
        var a = DemoStageCache.Key("lm", 1, 64, 0.003);
        Assert.Equal(a, DemoStageCache.Key("lm", 1, 64, 0.003));
        Assert.NotEqual(a, DemoStageCache.Key("lm", 1, 64, 0.002));
        Assert.NotEqual(a, DemoStageCache.Key("vision", 1, 64, 0.003));
        Assert.StartsWith("lm-", a);
    }
}
