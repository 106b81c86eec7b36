using System.Text.Json;

namespace VisualChat.Tests.Data;

/// <summary>Builds a data root with every data set's layout: the real LLaVA and MiniGPT-4 samples plus small
/// fixtures in the shapes of docs/data-formats.md, with tiny PNG images.</summary>
public static class DataRootFixture
{
    public static readonly string[] CocoIds = ["000000000101", "000000000102", "000000000103", "000000000104"];

    public static void Build(TempDir dir)
    {
        // LLaVA: the real sample as detail_23k and conversation_58k, a small complex_reasoning file.
        var llava = File.ReadAllText(SharedData.LlavaSample);
        dir.File("llava/detail_23k.json", llava);
        dir.File("llava/conversation_58k.json", llava);
        using (var doc = JsonDocument.Parse(llava))
        {
            foreach (var record in doc.RootElement.EnumerateArray())
                dir.Png("coco/train2017/" + record.GetProperty("image").GetString());
        }

        dir.Json("llava/complex_reasoning_77k.json", CocoIds.Select(id => new
        {
            id,
            image = id + ".jpg",
            conversations = new object[]
            {
                new { from = "human", value = $"<image>\nWhat is special about picture {id}?" },
                new { from = "gpt", value = $"Picture {id} is special." },
            },
        }).ToArray());
        foreach (var id in CocoIds) dir.Png($"coco/train2017/{id}.jpg");

        // MIMIC-IT: CGD pairs two COCO images; SD/SN/TVC/VST use base64 maps.
        dir.Json("MIMIC-IT/CGD_instructions.json", new
        {
            meta = new { version = "1", time = "t", author = "a" },
            data = new Dictionary<string, object>
            {
                ["CGD_INS_000001"] = new { instruction = "What differs between the two images?", answer = "The first is brighter.", image_ids = new[] { "CGD_IMG_" + CocoIds[0], "CGD_IMG_" + CocoIds[1] }, rel_ins_ids = new[] { "CGD_INS_000002" } },
                ["CGD_INS_000002"] = new { instruction = "Which one has more people?", answer = "The second.", image_ids = new[] { "CGD_IMG_" + CocoIds[0], "CGD_IMG_" + CocoIds[1] }, rel_ins_ids = new[] { "CGD_INS_000001" } },
                ["CGD_INS_000003"] = new { instruction = "Compare the colors.", answer = "Both are blue.", image_ids = new[] { "CGD_IMG_" + CocoIds[2], "CGD_IMG_" + CocoIds[3] }, rel_ins_ids = Array.Empty<string>() },
            },
        });
        foreach (var subset in new[] { "SD", "SN", "TVC", "VST" })
        {
            var images = Enumerable.Range(1, 3).ToDictionary(i => $"{subset}_IMG_{i:D5}", _ => Convert.ToBase64String(TinyPng.Encode(2, 2)));
            dir.Json($"MIMIC-IT/{subset}.json", images);
            dir.Json($"MIMIC-IT/{subset}_instructions.json", new
            {
                meta = new { version = "1", time = "t", author = "a" },
                data = new Dictionary<string, object>
                {
                    [$"{subset}_INS_00001"] = new { instruction = "<image>What happens?", answer = "Things happen.", image_ids = new[] { $"{subset}_IMG_00001", $"{subset}_IMG_00002" }, rel_ins_ids = new[] { $"{subset}_INS_00002" } },
                    [$"{subset}_INS_00002"] = new { instruction = "And then?", answer = "More things.", image_ids = new[] { $"{subset}_IMG_00001", $"{subset}_IMG_00002" }, rel_ins_ids = Array.Empty<string>() },
                    [$"{subset}_INS_00003"] = new { instruction = "Describe it.", answer = "A frame.", image_ids = new[] { $"{subset}_IMG_00003" }, rel_ins_ids = Array.Empty<string>() },
                },
            });
        }

        // SparklesDialogue.
        foreach (var subset in new[] { "SparklesDialogueCC", "SparklesDialogueVG" })
        {
            dir.Png($"{subset}/images/11.jpg");
            dir.Png($"{subset}/images/12.jpg");
            dir.Json($"{subset}/annotations/{subset}.json", new[]
            {
                new
                {
                    dialogue = new object[]
                    {
                        new { role = "user", content = "Look at IMAGE#11 <Img><ImageHere></Img>. What is it?", images = new[] { new { image_id = "11" } } },
                        new { role = "assistant", content = "IMAGE#11 shows a cat." },
                        new { role = "user", content = "Compare IMAGE#12 <Img><ImageHere></Img> with IMAGE#11.", images = new[] { new { image_id = "12" } } },
                        new { role = "assistant", content = "They differ." },
                    },
                },
            });
        }

        // A-OKVQA.
        dir.Json("aokvqa/annotations/aokvqa_v1p0_train.json", new[]
        {
            new { question_id = "q1", image_id = 101, question = "What is the man holding?", choices = new[] { "a cup", "a bat" }, correct_choice_idx = 1, direct_answers = new[] { "bat" }, rationales = new[] { "He plays baseball.", "Bats are used in baseball." } },
        });

        // COCO captions.
        dir.Png("coco/2014/COCO_val2014_000000391895.jpg");
        dir.Json("coco_caption/dataset.json", new
        {
            images = new[]
            {
                new { filepath = "val2014", filename = "COCO_val2014_000000391895.jpg", imgid = 0, split = "train", sentences = new[] { new { raw = "A man riding a bike." } }, cocoid = 391895 },
            },
        });

        // MiniGPT-4: the real sample.
        dir.File("cc_sbu_align/filter_cap.json", File.ReadAllText(SharedData.MiniGpt4Sample));
        using (var doc = JsonDocument.Parse(File.ReadAllText(SharedData.MiniGpt4Sample)))
        {
            foreach (var id in doc.RootElement.GetProperty("annotations").EnumerateArray().Select(a => a.GetProperty("image_id").GetString()).Distinct())
                dir.Png($"cc_sbu_align/image/{id}.jpg");
        }

        // OCR-VQA: one real cover, one 1×1 placeholder.
        dir.Png("OCR_VQA/images/book1.jpg", 4, 6);
        dir.Png("OCR_VQA/images/book2.jpg", 1, 1);
        dir.Json("OCR_VQA/dataset.json", new Dictionary<string, object>
        {
            ["book1"] = new { imageURL = "http://images.example.com/xyz.jpg", questions = new[] { "Who wrote this book?", "What is the title?" }, answers = new[] { "Jane Doe", "Stories" }, title = "Stories", genre = "Fiction" },
            ["book2"] = new { imageURL = "http://images.example.com/abc.jpg", questions = new[] { "Who wrote this book?" }, answers = new[] { "Nobody" }, title = "X", genre = "Y" },
        });

        // Generic JSONL.
        dir.Png("mine/img/a.png");
        dir.Png("mine/img/b.png");
        dir.File("mine/chat.jsonl",
            """
            {"id": "c1", "rounds": [{"images": ["img/a.png"], "question": "What is this?", "answer": "A square."}, {"images": ["img/b.png"], "question": "And this?", "answer": "Another square."}]}
            {"id": "c2", "system": "Be brief.", "rounds": [{"images": ["img/b.png"], "question": "Color?", "answer": "Blue."}]}
            """);
    }

    public static string AllDataSetsConfig(TempDir dir, long seed = 1234, double evalFraction = 0.1) =>
        dir.File("config.json", $$"""
        {
          "root": ".",
          "seed": {{seed}},
          "max_seq_len": 100000,
          "image_tokens": 4,
          "eval_fraction": {{evalFraction.ToString(System.Globalization.CultureInfo.InvariantCulture)}},
          "max_skip_fraction": 0.5,
          "datasets": [
            {"name": "llava"}, {"name": "llava_dial"}, {"name": "llava_otter_blend"},
            {"name": "otter_mimicit_cgd"}, {"name": "otter_mimicit_sd"}, {"name": "otter_mimicit_sn"},
            {"name": "otter_mimicit_tvc"}, {"name": "otter_mimicit_vst"}, {"name": "sparkles_dialogue"},
            {"name": "aokvqa"}, {"name": "coco_caption"}, {"name": "minigpt4"}, {"name": "ocr_vqa"},
            {"name": "mine", "format": "jsonl", "path": "mine/chat.jsonl"}
          ]
        }
        """);
}

/// <summary>One fixture data root per test class (building it writes ~600 tiny images).</summary>
public sealed class DataRootClassFixture : IDisposable
{
    public TempDir Dir { get; } = new();

    public DataRootClassFixture() => DataRootFixture.Build(Dir);

    public void Dispose() => Dir.Dispose();
}
