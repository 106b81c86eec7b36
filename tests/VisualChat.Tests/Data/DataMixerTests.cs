using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Text;

namespace VisualChat.Tests.Data;

public class DataMixerTests(DataRootClassFixture fixture) : IClassFixture<DataRootClassFixture>
{
    private readonly TempDir _dir = fixture.Dir;

    private static string Fingerprint(IEnumerable<Conversation> conversations)
    {
        var template = new ConversationTemplate();
        return string.Join("\n\u0001", conversations.Select(c => string.Join(",", c.SourceIds) + "|" + string.Join(",", c.Images.Select(i => i.Describe())) + "|" + template.RenderText(c)));
    }

    [Fact]
    public void Same_seed_same_samples_whatever_the_thread_count()
    {
        var config = DataConfig.Load(DataRootFixture.AllDataSetsConfig(_dir));
        var one = DataMixer.Build(config, maxDegreeOfParallelism: 1);
        var many = DataMixer.Build(config, maxDegreeOfParallelism: 4);
        Assert.Equal(Fingerprint(one.Train), Fingerprint(many.Train));
        Assert.Equal(Fingerprint(one.Eval), Fingerprint(many.Eval));
        Assert.NotEmpty(one.Eval);
        var other = DataMixer.Build(config with { Seed = 99 });
        Assert.NotEqual(Fingerprint(one.Train), Fingerprint(other.Train));
        // Every data set contributes.
        Assert.Equal(14, one.Train.Concat(one.Eval).Select(c => c.DataSetName).Distinct().Count());
    }

    [Fact]
    public void Llava_blends_one_to_three_records_with_images_renumbered()
    {
        var config = DataConfig.Load(DataRootFixture.AllDataSetsConfig(_dir)) ;
        config = config with { DataSets = [config.DataSets[0]], EvalFraction = 0 };
        var mixed = DataMixer.Build(config);
        var sizes = mixed.Train.Select(c => c.SourceIds.Count).ToArray();
        Assert.All(sizes, s => Assert.InRange(s, 1, 3));
        Assert.Contains(sizes, s => s > 1);
        Assert.Equal(104, sizes.Sum()); // every record used exactly once
        Assert.Equal(104, mixed.Train.SelectMany(c => c.SourceIds).Distinct().Count());
        var multi = mixed.Train.First(c => c.ImageCount == 3);
        var text = new ConversationTemplate().RenderText(multi);
        Assert.Contains("### Image 3:\n<image>", text);
        Assert.Equal(1, text.Split("You are a helpful").Length - 1); // system once
    }

    [Fact]
    public void Split_is_on_source_records_and_never_leaks()
    {
        var config = DataConfig.Load(DataRootFixture.AllDataSetsConfig(_dir, evalFraction: 0.3));
        var mixed = DataMixer.Build(config);
        var train = mixed.Train.SelectMany(c => c.SourceIds).ToHashSet();
        var eval = mixed.Eval.SelectMany(c => c.SourceIds).ToHashSet();
        Assert.NotEmpty(eval);
        Assert.Empty(train.Intersect(eval));
        var llavaUnits = mixed.Report.For("llava");
        Assert.InRange(llavaUnits.EvalUnits, 15, 50); // ≈30 % of 104
    }

    [Fact]
    public void Samples_and_weights_draw_deterministic_counts()
    {
        var config = DataConfig.Load(DataRootFixture.AllDataSetsConfig(_dir));
        var minigpt = config.DataSets.Single(d => d.Name == "minigpt4");
        var few = DataMixer.Build(config with { DataSets = [minigpt with { Samples = 100 }] });
        Assert.Equal(100, few.Train.Count + few.Eval.Count, 1.0);
        var twice = DataMixer.Build(config with { DataSets = [minigpt with { Weight = 2 }] });
        var once = DataMixer.Build(config with { DataSets = [minigpt] });
        Assert.Equal(2 * once.Train.Count, twice.Train.Count);
        Assert.Equal(Fingerprint(few.Train), Fingerprint(DataMixer.Build(config with { DataSets = [minigpt with { Samples = 100 }] }).Train));
    }

    [Fact]
    public void Blend_never_exceeds_max_images()
    {
        var conversations = Enumerable.Range(0, 50).Select(i => new Conversation("d",
            [new Round(Enumerable.Range(0, 1 + i % 3).Select(k => (ImageRef)new FileImageRef($"/{i}_{k}")).ToArray(), "q", "a")],
            [new SourceId("f", i.ToString())])).ToList();
        var blended = DataMixer.Blend("d", conversations, 1, 5, 4, new StableRandom(7));
        Assert.All(blended, b => Assert.InRange(b.ImageCount, 1, 4));
        Assert.Equal(50, blended.Sum(b => b.SourceIds.Count));
    }
}

public class TruncationTests
{
    private static Conversation ThreeRounds() => new("d",
        [new Round([new FileImageRef("/a")], "Q1", "A1"), new Round([new FileImageRef("/b")], "Q2", "A2"), Round.TextOnly("Q3", "A3")],
        [new SourceId("f", "1")]);

    private static SampleEncoder Encoder(int maxSeqLen, TruncationMode mode) =>
        new(new ConversationTemplate(new() { SystemPrompt = null }), new FakeCharTokenizer(), maxSeqLen, imageTokens: 10, mode);

    [Fact]
    public void Length_counts_image_expansion_and_cuts_at_round_boundaries()
    {
        var template = new ConversationTemplate(new() { SystemPrompt = null });
        var rounds = template.TokenizeRounds(ThreeRounds(), new FakeCharTokenizer());
        int r1 = rounds[0].InputIds.Length + 9, r2 = rounds[1].InputIds.Length + 9, r3 = rounds[2].InputIds.Length;
        Assert.Equal(r1 + r2 + r3, Encoder(100000, TruncationMode.Drop).Fit(ThreeRounds()).Sample!.ExpandedLength);

        // One token short of fitting all three rounds: keep two, never split the second round's image.
        var cut = Encoder(r1 + r2 + r3 - 1, TruncationMode.CutRounds).Fit(ThreeRounds());
        Assert.True(cut.Cut);
        Assert.Equal(1, cut.RoundsRemoved);
        Assert.Equal(2, cut.Sample!.Conversation.Rounds.Count);
        Assert.Equal(r1 + r2, cut.Sample.ExpandedLength);
        var tokenized = Encoder(r1 + r2, TruncationMode.CutRounds).Encode(cut.Sample.Conversation);
        Assert.Equal(2, tokenized.ImagePositions.Length);
        Assert.Equal(2, tokenized.InputIds[^1]); // ends with the kept round's EOS

        // Just under the first two rounds: the second round (with its image) goes as a whole.
        var one = Encoder(r1 + r2 - 1, TruncationMode.CutRounds).Fit(ThreeRounds());
        Assert.Single(one.Sample!.Conversation.Rounds);
        Assert.Equal(1, one.Sample.Conversation.ImageCount);

        Assert.Null(Encoder(r1 - 1, TruncationMode.CutRounds).Fit(ThreeRounds()).Sample);
        Assert.Null(Encoder(r1 + r2 + r3 - 1, TruncationMode.Drop).Fit(ThreeRounds()).Sample);
    }

    [Fact]
    public void Each_decision_is_counted()
    {
        var template = new ConversationTemplate(new() { SystemPrompt = null });
        var rounds = template.TokenizeRounds(ThreeRounds(), new FakeCharTokenizer());
        int r1 = rounds[0].InputIds.Length + 9;
        var shortOne = new Conversation("d", [Round.TextOnly("Q", "A")], [new SourceId("f", "2")]);
        var report = new DataReport();
        var prepared = Encoder(r1, TruncationMode.CutRounds).Prepare([ThreeRounds(), shortOne], report);
        Assert.Equal(2, prepared.Count);
        var d = report.For("d");
        Assert.Equal(1, d.TruncationCut);
        Assert.Equal(2, d.RoundsCut);
        Assert.Equal(1, d.TruncationKept);

        var dropReport = new DataReport();
        Assert.Single(Encoder(r1, TruncationMode.Drop).Prepare([ThreeRounds(), shortOne], dropReport));
        Assert.Equal(1, dropReport.For("d").TruncationDropped);
        Assert.Equal(1, dropReport.For("d").Skips[SkipReason.TooLong]);
        Assert.Contains("max_seq_len", dropReport.For("d").Examples(SkipReason.TooLong)[0].Message);
    }
}
