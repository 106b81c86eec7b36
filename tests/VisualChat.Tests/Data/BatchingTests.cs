using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Text;

namespace VisualChat.Tests.Data;

public class BatchingTests
{
    private static readonly FakeCharTokenizer Tokenizer = new();
    private static readonly ConversationTemplate Template = new(new() { SystemPrompt = null });

    private static List<PreparedSample> Samples(int count) => Enumerable.Range(0, count).Select(i =>
    {
        var c = new Conversation("d", [new Round([new FileImageRef($"/img/{i}.png")], new string('q', 1 + i % 7), new string('a', 1 + i * 3 % 11))], [new SourceId("f", i.ToString())]);
        var t = Template.Tokenize(c, Tokenizer);
        return new PreparedSample(c, t.Length, t.ExpandedLength(4));
    }).ToList();

    [Fact]
    public void Collator_right_pads_to_a_multiple_of_8()
    {
        var a = Template.Tokenize(Samples(3)[0].Conversation, Tokenizer);
        var b = Template.Tokenize(Samples(3)[2].Conversation, Tokenizer);
        using var batch = Collator.For(Tokenizer).Collate([a, b]);
        int longest = Math.Max(a.Length, b.Length);
        long expectedL = (longest + 7) / 8 * 8;
        Assert.Equal([2L, expectedL], batch.InputIds.shape);
        Assert.Equal(TorchSharp.torch.ScalarType.Int64, batch.InputIds.dtype);
        Assert.Equal(batch.InputIds.shape, batch.Labels.shape);
        Assert.Equal(batch.InputIds.shape, batch.AttentionMask.shape);
        var ids = batch.InputIds.data<long>().ToArray();
        var labels = batch.Labels.data<long>().ToArray();
        var mask = batch.AttentionMask.data<long>().ToArray();
        Assert.Equal(a.InputIds.Select(x => (long)x), ids.Take(a.Length));
        Assert.Equal(a.Labels.Select(x => (long)x), labels.Take(a.Length));
        Assert.All(Enumerable.Range(a.Length, (int)expectedL - a.Length), t =>
        {
            Assert.Equal(Tokenizer.EosId, ids[t]); // LLaMA has no pad: EOS pads, masked out
            Assert.Equal(-100, labels[t]);
            Assert.Equal(0, mask[t]);
        });
        Assert.Equal(a.Length, mask.Take((int)expectedL).Sum());
        Assert.Equal([a.Images, b.Images], batch.Images);
    }

    [Fact]
    public void Batch_plan_is_deterministic_and_length_grouping_groups()
    {
        var lengths = Enumerable.Range(0, 200).Select(i => (i * 37) % 101).ToArray();
        var plan = BatchPlanner.Plan(lengths, 8, seed: 5, epoch: 0, groupByLength: true, megaBatchFactor: 5);
        Assert.Equal(plan.Select(b => string.Join(",", b)), BatchPlanner.Plan(lengths, 8, 5, 0, groupByLength: true, megaBatchFactor: 5).Select(b => string.Join(",", b)));
        Assert.NotEqual(plan.Select(b => string.Join(",", b)), BatchPlanner.Plan(lengths, 8, 5, 1, groupByLength: true, megaBatchFactor: 5).Select(b => string.Join(",", b)));
        Assert.Equal(Enumerable.Range(0, 200), plan.SelectMany(b => b).Order());
        double spreadGrouped = plan.Average(b => b.Max(i => lengths[i]) - b.Min(i => lengths[i]));
        var random = BatchPlanner.Plan(lengths, 8, 5, 0);
        double spreadRandom = random.Average(b => b.Max(i => lengths[i]) - b.Min(i => lengths[i]));
        Assert.True(spreadGrouped < spreadRandom / 3, $"grouped spread {spreadGrouped} vs random {spreadRandom}");
        Assert.All(BatchPlanner.Plan(lengths, 16, 5, 0, dropLast: true), b => Assert.Equal(16, b.Length));
    }

    [Fact]
    public async Task Loader_keeps_plan_order_whatever_the_worker_count_and_runs_the_transform()
    {
        var samples = Samples(40);
        var plan = BatchPlanner.Plan(samples.Select(s => s.ExpandedLength).ToArray(), 4, seed: 3, epoch: 0);
        async Task<List<string>> Run(int workers)
        {
            var loader = new DataLoader<string>(samples, Template.Tokenize(Tokenizer), Collator.For(Tokenizer),
                (sample, _) => sample.Images[0].Describe() + ":" + sample.Length, workers, prefetchBatches: 2);
            var seen = new List<string>();
            await foreach (var batch in loader.ReadAsync(plan))
            {
                using (batch)
                {
                    Assert.Equal(batch.Batch.Samples.Count, batch.Items.Count);
                    seen.Add(string.Join(";", batch.Items) + "|" + string.Join(",", batch.Batch.InputIds.data<long>().ToArray()));
                }
            }

            return seen;
        }
        var single = await Run(1);
        var parallel = await Run(4);
        Assert.Equal(plan.Count, single.Count);
        Assert.Equal(single, parallel);
        Assert.StartsWith($"/img/{plan[0][0]}.png:", single[0]);
    }

    [Fact]
    public void Loader_stops_early_and_surfaces_transform_errors()
    {
        var samples = Samples(20);
        var plan = BatchPlanner.Plan(samples.Select(s => s.ExpandedLength).ToArray(), 2, 1, 0);
        var loader = new DataLoader<int>(samples, Template.Tokenize(Tokenizer), Collator.For(Tokenizer), (s, _) => s.Length, 2, 2);
        using (var first = loader.Read(plan).First()) Assert.Equal(2, first.Items.Count);
        var failing = new DataLoader<int>(samples, Template.Tokenize(Tokenizer), Collator.For(Tokenizer),
            (s, _) => s.Images[0].Describe().EndsWith("/7.png") ? throw new InvalidDataException("cannot decode 7") : 0, 2, 2);
        var e = Assert.Throws<InvalidDataException>(() => { foreach (var b in failing.Read(plan)) b.Dispose(); });
        Assert.Contains("cannot decode 7", e.Message);
    }
}

internal static class TemplateExtensions
{
    public static Func<Conversation, TokenizedSample> Tokenize(this ConversationTemplate template, ITokenizer tokenizer) =>
        c => template.Tokenize(c, tokenizer);
}
