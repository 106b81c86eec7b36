using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Inference.Evaluation;
using VisualChat.Text;

namespace VisualChat.Tests.Data;

public class ReaderTests(DataRootClassFixture fixture) : IClassFixture<DataRootClassFixture>
{
    private readonly TempDir _dir = fixture.Dir;

    private (List<Conversation> Conversations, DataSetReport Report) Read(string format, string? path = null, int maxImages = 8)
    {
        var report = new DataReport();
        var context = new ReadContext { DataSetName = format, Root = _dir.Path, Path = path, Report = report.For(format), MaxImages = maxImages };
        var reader = DataSetCatalog.Create(format);
        reader.VerifyFiles(context);
        return (reader.Read(context).ToList(), context.Report);
    }

    [Fact]
    public void Llava_real_sample_first_pair_with_marker_removed()
    {
        var (conversations, report) = Read("llava");
        Assert.Equal(104, conversations.Count); // 100 real + 4 fixture records
        Assert.Equal(0, report.SkippedTotal);
        var first = conversations[0];
        Assert.Single(first.Rounds);
        Assert.Equal("What is the man doing in the back of the pickup truck?", first.Rounds[0].Question);
        Assert.StartsWith("The man is sitting on top of piled objects", first.Rounds[0].Answer);
        Assert.Equal(Path.Combine(_dir.Path, "coco/train2017/000000379143.jpg"), first.Rounds[0].NewImages[0].Describe());
        Assert.Equal(new SourceId("llava/detail_23k.json", "000000379143"), first.SourceIds[0]);
        Assert.Equal("How many people are seen surfing in the image?", conversations[1].Rounds[0].Question); // leading marker
        Assert.All(conversations, c => Assert.DoesNotContain("<image>", c.Rounds[0].Question));
    }

    [Fact]
    public void Llava_dial_keeps_every_pair_with_image_in_first_round()
    {
        var (conversations, _) = Read("llava_dial");
        Assert.Equal(100, conversations.Count);
        Assert.Equal(5, conversations[0].Rounds.Count);
        Assert.Equal(458, conversations.Sum(c => c.Rounds.Count));
        Assert.All(conversations, c =>
        {
            Assert.Single(c.Rounds[0].NewImages);
            Assert.All(c.Rounds.Skip(1), r => Assert.Empty(r.NewImages));
        });
        Assert.Equal("Is the man holding anything in his hands?", conversations[0].Rounds[1].Question);
    }

    [Fact]
    public void MiniGpt4_real_sample()
    {
        var (conversations, report) = Read("minigpt4");
        Assert.Equal(2362, conversations.Count);
        Assert.Equal(0, report.SkippedTotal);
        Assert.Contains(conversations[0].Rounds[0].Question, PromptLists.CaptionQuestions);
        Assert.StartsWith("In the image, a flock of ducks", conversations[0].Rounds[0].Answer);
        Assert.EndsWith("cc_sbu_align/image/10.jpg", conversations[0].Rounds[0].NewImages[0].Describe());
        Assert.Equal("10", conversations[0].SourceIds[0].Record);
    }

    [Fact]
    public void Mimic_it_merges_related_instructions_and_references_base64_images()
    {
        var (conversations, _) = Read("otter_mimicit_sd");
        Assert.Equal(2, conversations.Count);
        var merged = conversations[0];
        Assert.Equal(2, merged.Rounds.Count);
        Assert.Equal(2, merged.Rounds[0].NewImages.Count);
        Assert.Empty(merged.Rounds[1].NewImages);
        Assert.Equal(["SD_INS_00001", "SD_INS_00002"], merged.SourceIds.Select(s => s.Record));
        Assert.Equal(["And then?", "What happens?"], merged.Rounds.Select(r => r.Question).Order());
        var image = Assert.IsType<Base64MapImageRef>(merged.Rounds[0].NewImages[0]);
        Assert.Equal(TinyPng.Encode(2, 2), ImageRefs.ReadBytes(image));
        foreach (var subset in new[] { "otter_mimicit_sn", "otter_mimicit_tvc", "otter_mimicit_vst" })
            Assert.Equal(2, Read(subset).Conversations.Count);
    }

    [Fact]
    public void Mimic_it_cgd_uses_coco_files()
    {
        var (conversations, _) = Read("otter_mimicit_cgd");
        Assert.Equal(2, conversations.Count);
        Assert.EndsWith("coco/train2017/000000000101.jpg", conversations[0].Rounds[0].NewImages[0].Describe());
        Assert.Equal(2, conversations[0].Rounds.Count);
    }

    [Fact]
    public void Mimic_it_respects_max_images()
    {
        var (conversations, report) = Read("otter_mimicit_sd", maxImages: 1);
        Assert.Single(conversations);
        Assert.Equal(1, report.Skips[SkipReason.TooManyImages]);
    }

    [Fact]
    public void Llava_otter_blend_discusses_each_image_then_both()
    {
        var (conversations, report) = Read("llava_otter_blend");
        Assert.Equal(2, conversations.Count);
        Assert.Equal(0, report.SkippedTotal);
        foreach (var c in conversations)
        {
            Assert.Equal(2, c.ImageCount);
            Assert.Single(c.Rounds[0].NewImages);
            Assert.StartsWith("What is special about picture", c.Rounds[0].Question);
            Assert.Contains(c.Rounds, r => r.Question is "What differs between the two images?" or "Which one has more people?" or "Compare the colors.");
            Assert.StartsWith("MIMIC-IT/CGD_instructions.json", c.SourceIds[0].File);
            Assert.Contains(c.SourceIds, s => s.File == "llava/complex_reasoning_77k.json");
        }
    }

    [Fact]
    public void Sparkles_replaces_image_references_with_ordinals()
    {
        var (conversations, report) = Read("sparkles_dialogue");
        Assert.Equal(2, conversations.Count);
        Assert.Equal(0, report.SkippedTotal);
        var c = conversations[0];
        Assert.Equal(2, c.Rounds.Count);
        Assert.Single(c.Rounds[0].NewImages);
        Assert.Single(c.Rounds[1].NewImages);
        var allText = string.Join(" ", c.Rounds.SelectMany(r => new[] { r.Question, r.Answer }));
        Assert.DoesNotContain("IMAGE#", allText);
        Assert.DoesNotContain("<Img>", allText);
        Assert.Matches("^Look at (image a|image A|the first image)\\. What is it\\?$", c.Rounds[0].Question);
        Assert.Matches("^(Image a|Image A|The first image) shows a cat\\.$", c.Rounds[0].Answer!);
    }

    [Fact]
    public void Aokvqa_coco_caption_ocr_vqa_and_jsonl()
    {
        var aok = Read("aokvqa").Conversations.Single();
        Assert.Equal("The answer is a bat. Because He plays baseball. Bats are used in baseball.", aok.Rounds[0].Answer);
        Assert.StartsWith("What is the man holding? ", aok.Rounds[0].Question);
        Assert.Contains(aok.Rounds[0].Question["What is the man holding? ".Length..], PromptLists.ReasonQuestions);
        Assert.EndsWith("coco/train2017/000000000101.jpg", aok.Rounds[0].NewImages[0].Describe());

        var coco = Read("coco_caption").Conversations.Single();
        Assert.Equal("A man riding a bike.", coco.Rounds[0].Answer);

        var (ocr, ocrReport) = Read("ocr_vqa");
        Assert.Single(ocr);
        Assert.Equal(1, ocrReport.Skips[SkipReason.PlaceholderImage]);
        Assert.EndsWith("OCR_VQA/images/book1.jpg", ocr[0].Rounds[0].NewImages[0].Describe());

        var (jsonl, _) = Read("jsonl", "mine/chat.jsonl");
        Assert.Equal(2, jsonl.Count);
        Assert.Equal(Path.Combine(_dir.Path, "mine/img/b.png"), jsonl[0].Rounds[1].NewImages[0].Describe());
        Assert.Equal("Be brief.", jsonl[1].System);
        Assert.StartsWith("Be brief.\n\n### Image 1:", new ConversationTemplate().RenderText(jsonl[1]));
    }

    [Fact]
    public void Dsvc_eval_real_files_become_question_only_conversations()
    {
        var file = Path.Combine(SharedData.DsvcApp, "eval", "eval_data", "eval_comprehensive.json");
        var tests = DsvcEvalReader.Read(file, SharedData.DsvcApp);
        var cats = tests.Single(t => t.Name == "cat_images1").Conversation;
        Assert.Equal(7, cats.Rounds.Count);
        Assert.Equal(3, cats.ImageCount);
        Assert.All(cats.Images, i => Assert.True(File.Exists(i.Describe()), i.Describe()));
        Assert.All(cats.Rounds, r => Assert.Null(r.Answer));
        // Round by round: the first round alone is an inference prompt.
        var prompt = new ConversationTemplate().RenderInferencePrompt(cats.TakeRounds(1));
        Assert.EndsWith("### Image 1:\n<image>\n\n### Question:\nPlease describe the image in detail.\n\n### Answer:\n", prompt);
        foreach (var name in new[] { "eval_single.json", "eval_robustness.json" })
            Assert.NotEmpty(DsvcEvalReader.Read(Path.Combine(SharedData.DsvcApp, "eval", "eval_data", name), SharedData.DsvcApp));
    }

    [Fact]
    public void Base64_map_handles_escaped_values_and_reports_unknown_keys()
    {
        var png = TinyPng.Encode(3, 1);
        var escaped = Convert.ToBase64String(png).Replace("/", "\\/");
        var map = _dir.File("map.json", "{\"x\": \"" + Convert.ToBase64String(png) + "\", \"nested\": {\"a\": \"b\"}, \"y\": \"" + escaped + "\"}");
        var opened = Base64ImageMap.Open(map);
        Assert.Equal(2, opened.Count);
        Assert.Equal(png, opened.ReadBytes("x"));
        Assert.Equal(png, opened.ReadBytes("y"));
        Assert.True(VisualChat.Vision.Imaging.ImageHeader.TryRead(opened.ReadBytes("y"), out var header));
        Assert.Equal((3, 1), (header.Width, header.Height));
        Assert.Contains("map.json", Assert.Throws<KeyNotFoundException>(() => opened.ReadBytes("z")).Message);
    }

    [Fact]
    public void Image_header_reads_real_jpeg_and_png_sizes()
    {
        var jpeg = Path.Combine(SharedData.DsvcApp, "eval", "eval_data", "images", "singles", "extreme_ironing.jpg");
        Assert.True(VisualChat.Vision.Imaging.ImageHeader.TryReadFile(jpeg, out var size));
        Assert.True(size.Width > 1 && size.Height > 1);
        Assert.True(VisualChat.Vision.Imaging.ImageHeader.TryReadFile(_dir.Combine("OCR_VQA/images/book1.jpg"), out var book));
        Assert.Equal((4, 6), (book.Width, book.Height));
    }
}
