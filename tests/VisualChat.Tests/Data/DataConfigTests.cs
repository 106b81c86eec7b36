using VisualChat.Cli.Commands;
using VisualChat.Data;

namespace VisualChat.Tests.Data;

public class DataConfigTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private DataConfig Load(string json) => DataConfig.Load(_dir.File("c.json", json));

    [Fact]
    public void Parses_all_keys_with_defaults()
    {
        var config = Load("""
        {"root": "data", "seed": 7, "max_seq_len": 2048, "image_tokens": 256, "truncation": "drop", "eval_fraction": 0.2,
         "system": "S", "datasets": [{"name": "llava", "samples": 1000, "max_images": 6}, {"name": "llava_dial", "weight": 0.5},
         {"name": "mine", "format": "jsonl", "path": "x.jsonl", "concat": [1, 4]}]}
        """);
        Assert.Equal(Path.Combine(_dir.Path, "data"), config.Root);
        Assert.Equal(7, config.Seed);
        Assert.Equal(TruncationMode.Drop, config.Truncation);
        Assert.Equal("S", config.System);
        Assert.Equal((1, 3), (config.DataSets[0].ConcatMin, config.DataSets[0].ConcatMax)); // paper default for llava
        Assert.Equal((1, 2), (config.DataSets[1].ConcatMin, config.DataSets[1].ConcatMax));
        Assert.Equal((1, 4), (config.DataSets[2].ConcatMin, config.DataSets[2].ConcatMax));
        Assert.Equal(1000, config.DataSets[0].Samples);
        Assert.Equal(0.5, config.DataSets[1].Weight);
        Assert.Equal(6, config.DataSets[0].MaxImages);
    }

    [Fact]
    public void Yaml_config_reads_like_json()
    {
        var config = DataConfig.Load(_dir.File("c.yaml", """
            root: data
            seed: 7
            truncation: drop
            eval_fraction: 0.2
            system: "1234"
            datasets:
              - name: llava
                samples: 1000
              - {name: mine, format: jsonl, path: x.jsonl, concat: [1, 4], allow_text_only: true}
            """));
        Assert.Equal(7, config.Seed);
        Assert.Equal(TruncationMode.Drop, config.Truncation);
        Assert.Equal(0.2, config.EvalFraction);
        Assert.Equal("1234", config.System);
        Assert.Equal(1000, config.DataSets[0].Samples);
        Assert.Equal((1, 4), (config.DataSets[1].ConcatMin, config.DataSets[1].ConcatMax));
        Assert.True(config.DataSets[1].AllowTextOnly);
        var e = Assert.Throws<DataConfigException>(() => DataConfig.Load(_dir.File("bad.yaml", "root: .\nseed: many\ndatasets: [{name: llava}]\n")));
        Assert.Contains("seed", e.Message);
    }

    [Theory]
    [InlineData("""{"datasets": [{"name": "llava"}]}""", "'root'")]
    [InlineData("""{"root": ".", "datasets": [{"name": "llava"}], "seeed": 1}""", "'seeed'")]
    [InlineData("""{"root": ".", "truncation": "chop", "datasets": [{"name": "llava"}]}""", "'truncation'")]
    [InlineData("""{"root": ".", "eval_fraction": 1.5, "datasets": [{"name": "llava"}]}""", "eval_fraction")]
    [InlineData("""{"root": ".", "max_seq_len": "long", "datasets": [{"name": "llava"}]}""", "max_seq_len")]
    [InlineData("""{"root": ".", "datasets": [{"name": "lava"}]}""", "datasets[0].name")]
    [InlineData("""{"root": ".", "datasets": [{"name": "llava", "concat": [3, 1]}]}""", "datasets[0].concat")]
    [InlineData("""{"root": ".", "datasets": [{"name": "llava", "samples": 5, "weight": 1}]}""", "'samples' or 'weight'")]
    [InlineData("""{"root": ".", "datasets": [{"name": "x", "format": "jsonl"}]}""", "datasets[0].path")]
    [InlineData("""{"root": ".", "datasets": [{"name": "llava", "max_images": 0}]}""", "datasets[0].max_images")]
    [InlineData("""{"root": ".", "datasets": []}""", "'datasets'")]
    public void Errors_name_the_key(string json, string expected)
    {
        var e = Assert.Throws<DataConfigException>(() => Load(json));
        Assert.Contains(expected, e.Message);
    }
}

[Collection(ProcessWideStateCollection.Name)]
public class DataInspectCommandTests(DataRootClassFixture fixture) : IClassFixture<DataRootClassFixture>
{
    private readonly TempDir _dir = fixture.Dir;

    [Fact]
    public void Inspect_reports_counts_skips_histograms_and_renders_samples()
    {
        var config = DataRootFixture.AllDataSetsConfig(_dir);
        var text = DataInspectCommand.Inspect(config, 2, tokenizer: null);
        Assert.Contains("ocr_vqa: 2 records read", text);
        Assert.Contains("skipped PlaceholderImage: 1", text);
        Assert.Contains("book2", text);
        Assert.Contains("characters of rendered text (no tokenizer given", text);
        Assert.Contains("Images per train sample:", text);
        Assert.Contains("===== sample 2 (", text);
        Assert.Contains("  Image 1: " + Path.Combine(_dir.Path, "coco/train2017/"), text);
        Assert.Contains("### Question:\n", text);

        var withTokens = DataInspectCommand.Inspect(config, 0, new FakeCharTokenizer());
        Assert.Contains("tokens after image expansion (4 per image, max_seq_len 100000)", withTokens);
        Assert.Contains("fit, 0 cut", withTokens);
    }

    [Fact]
    public void Command_returns_error_code_for_missing_data_set()
    {
        var config = _dir.File("missing.json", """{"root": "nowhere", "datasets": [{"name": "aokvqa"}]}""");
        var command = DataInspectCommand.Create();
        Assert.Equal("data", command.Name);
        Assert.Contains(command.Subcommands, c => c.Name == "inspect");
        var root = new System.CommandLine.RootCommand { command };
        var error = new StringWriter();
        var original = Console.Error;
        Console.SetError(error);
        try
        {
            Assert.Equal(1, root.Parse(["data", "inspect", "--config", config]).Invoke());
        }
        finally
        {
            Console.SetError(original);
        }
        Assert.Contains(Path.Combine(_dir.Path, "nowhere", "aokvqa/annotations/aokvqa_v1p0_train.json"), error.ToString());
    }
}
