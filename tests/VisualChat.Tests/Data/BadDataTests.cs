using VisualChat.Conversations;
using VisualChat.Data;

namespace VisualChat.Tests.Data;

public class BadDataTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private DataSetReport ReadJsonl(string content, out List<Conversation> conversations)
    {
        _dir.Png("img/ok.png");
        _dir.File("bad.jsonl", content);
        var report = new DataReport();
        var context = new ReadContext { DataSetName = "bad", Root = _dir.Path, Path = "bad.jsonl", Report = report.For("bad") };
        conversations = new JsonlReader().Read(context).ToList();
        return context.Report;
    }

    [Fact]
    public void Jsonl_bad_records_are_skipped_and_counted_by_reason_with_examples()
    {
        var report = ReadJsonl(string.Join("\n",
            """{"id": "good", "rounds": [{"images": ["img/ok.png"], "question": "q", "answer": "a"}]}""",
            """{"id": "broken", "rounds": [""",
            """{"id": "noanswer", "rounds": [{"images": ["img/ok.png"], "question": "q"}]}""",
            """{"id": "missing", "rounds": [{"images": ["img/nope.png"], "question": "q", "answer": "a"}]}""",
            """{"id": "marker", "rounds": [{"images": ["img/ok.png"], "question": "see <image>", "answer": "a"}]}""",
            """{"id": "textonly", "rounds": [{"question": "q", "answer": "a"}]}"""), out var conversations);
        Assert.Single(conversations);
        Assert.Equal(6, report.RecordsRead);
        Assert.Equal(2, report.Skips[SkipReason.MalformedRecord]);
        Assert.Equal(1, report.Skips[SkipReason.MissingImage]);
        Assert.Equal(1, report.Skips[SkipReason.PlaceholderMismatch]);
        Assert.Equal(1, report.Skips[SkipReason.NoImage]);
        var malformed = report.Examples(SkipReason.MalformedRecord);
        Assert.Equal(["line 2", "line 3"], malformed.Select(e => e.Record));
        Assert.All(malformed, e => Assert.Equal("bad.jsonl", e.File));
        Assert.Contains("answer", malformed[1].Message);
        Assert.Contains("img/nope.png", report.Examples(SkipReason.MissingImage)[0].Message);
    }

    [Fact]
    public void Llava_unknown_role_mismatch_and_missing_image()
    {
        _dir.Png("coco/train2017/1.jpg");
        _dir.Json("llava/conversation_58k.json", new object[]
        {
            new { id = "ok", image = "1.jpg", conversations = new object[] { new { from = "human", value = "<image>\nq" }, new { from = "gpt", value = "a" } } },
            new { id = "role", image = "1.jpg", conversations = new object[] { new { from = "human", value = "<image>\nq" }, new { from = "robot", value = "a" } } },
            new { id = "order", image = "1.jpg", conversations = new object[] { new { from = "gpt", value = "<image>\nq" }, new { from = "human", value = "a" } } },
            new { id = "twice", image = "1.jpg", conversations = new object[] { new { from = "human", value = "<image>\nq <image>" }, new { from = "gpt", value = "a" } } },
            new { id = "nomarker", image = "1.jpg", conversations = new object[] { new { from = "human", value = "q" }, new { from = "gpt", value = "a" } } },
            new { id = "gone", image = "2.jpg", conversations = new object[] { new { from = "human", value = "<image>\nq" }, new { from = "gpt", value = "a" } } },
            new { id = "nofield" },
        });
        var report = new DataReport();
        var context = new ReadContext { DataSetName = "llava_dial", Root = _dir.Path, Report = report.For("llava_dial") };
        var conversations = new LlavaReader(dialogue: true).Read(context).ToList();
        Assert.Single(conversations);
        var r = context.Report;
        Assert.Equal(1, r.Skips[SkipReason.UnknownRole]);
        Assert.Equal(1, r.Skips[SkipReason.BadAlternation]);
        Assert.Equal(2, r.Skips[SkipReason.PlaceholderMismatch]);
        Assert.Equal(1, r.Skips[SkipReason.MissingImage]);
        Assert.Equal(1, r.Skips[SkipReason.MalformedRecord]);
        Assert.Equal("role", r.Examples(SkipReason.UnknownRole)[0].Record);
        Assert.Equal("llava/conversation_58k.json", r.Examples(SkipReason.UnknownRole)[0].File);
    }

    [Fact]
    public void Sparkles_marker_count_mismatch_and_missing_base64_key()
    {
        _dir.Png("SparklesDialogueCC/images/1.jpg");
        _dir.Json("SparklesDialogueCC/annotations/SparklesDialogueCC.json", new[]
        {
            new { dialogue = new object[] { new { role = "user", content = "IMAGE#1 no marker", images = new[] { new { image_id = "1" } } }, new { role = "assistant", content = "a" } } },
            new { dialogue = new object[] { new { role = "user", content = "x <Img><ImageHere></Img>", images = new[] { new { image_id = "1" } } }, new { role = "wizard", content = "a" } } },
        });
        _dir.Png("SparklesDialogueVG/images/1.jpg");
        _dir.Json("SparklesDialogueVG/annotations/SparklesDialogueVG.json", Array.Empty<object>());
        var report = new DataReport();
        var context = new ReadContext { DataSetName = "s", Root = _dir.Path, Report = report.For("s") };
        Assert.Empty(new SparklesDialogueReader().Read(context));
        Assert.Equal(1, context.Report.Skips[SkipReason.PlaceholderMismatch]);
        Assert.Equal(1, context.Report.Skips[SkipReason.UnknownRole]);

        _dir.Json("MIMIC-IT/SD.json", new Dictionary<string, string> { ["SD_IMG_1"] = Convert.ToBase64String(TinyPng.Encode(1, 1)) });
        _dir.Json("MIMIC-IT/SD_instructions.json", new
        {
            data = new Dictionary<string, object>
            {
                ["SD_INS_1"] = new { instruction = "q", answer = "a", image_ids = new[] { "SD_IMG_1" }, rel_ins_ids = Array.Empty<string>() },
                ["SD_INS_2"] = new { instruction = "q", answer = "a", image_ids = new[] { "SD_IMG_404" }, rel_ins_ids = Array.Empty<string>() },
            },
        });
        var sd = new ReadContext { DataSetName = "sd", Root = _dir.Path, Report = report.For("sd") };
        Assert.Single(new MimicItReader("SD").Read(sd));
        Assert.Equal(1, sd.Report.Skips[SkipReason.MissingImage]);
        Assert.Contains("SD_IMG_404", sd.Report.Examples(SkipReason.MissingImage)[0].Message);
    }

    [Fact]
    public void Too_many_skips_fail_the_build()
    {
        _dir.Png("img/ok.png");
        _dir.File("d.jsonl", string.Join("\n",
            """{"rounds": [{"images": ["img/ok.png"], "question": "q", "answer": "a"}]}""",
            "not json", "not json either"));
        var config = new DataConfig { Root = _dir.Path, MaxSkipFraction = 0.5, DataSets = [new DataSetConfig { Name = "d", Format = "jsonl", Path = "d.jsonl" }] };
        var e = Assert.Throws<DataQualityException>(() => DataMixer.Build(config));
        Assert.Contains("2 of 3 records", e.Message);
        Assert.Contains("MalformedRecord", e.Message);
        Assert.Single(DataMixer.Build(config with { MaxSkipFraction = 0.7 }).Train.Concat(DataMixer.Build(config with { MaxSkipFraction = 0.7 }).Eval));
        Assert.Equal(2, DataMixer.Build(config, enforceSkipLimit: false).Report.Skipped);
    }

    [Fact]
    public void Missing_data_set_files_fail_before_reading_and_name_the_path()
    {
        _dir.Png("img/ok.png");
        _dir.File("d.jsonl", """{"rounds": [{"images": ["img/ok.png"], "question": "q", "answer": "a"}]}""");
        var config = new DataConfig
        {
            Root = _dir.Path,
            DataSets = [new DataSetConfig { Name = "d", Format = "jsonl", Path = "d.jsonl" }, new DataSetConfig { Name = "llava", Format = "llava", ConcatMax = 3 }],
        };
        var e = Assert.Throws<DataSetMissingException>(() => DataMixer.Build(config));
        Assert.Contains(Path.Combine(_dir.Path, "llava/detail_23k.json"), e.Message);
        Assert.Contains(Path.Combine(_dir.Path, "coco/train2017"), e.Message);
        Assert.Contains("'llava'", e.Message);
        Assert.DoesNotContain("d.jsonl", e.Message);

        _dir.File("MIMIC-IT/SD_instructions.json", "{}");
        _dir.File("MIMIC-IT/SD.parquet", "x");
        var parquet = Assert.Throws<DataSetMissingException>(() => DataMixer.VerifyFiles(config with { DataSets = [new DataSetConfig { Name = "sd", Format = "otter_mimicit_sd" }] }));
        Assert.Contains("SD.parquet", parquet.Message);
    }
}
