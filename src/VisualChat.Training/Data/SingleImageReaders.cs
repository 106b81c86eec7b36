using System.Text.Json;
using VisualChat.Conversations;
using VisualChat.Text;

namespace VisualChat.Data;

/// <summary>Fixed question lists of the original data loaders (DeepSpeed-VisualChat utils/data).</summary>
public static class PromptLists
{
    /// <summary>Caption questions (coco_caption_dataset.py / cc_sbu_align_dataset.py).</summary>
    public static readonly string[] CaptionQuestions =
    [
        "please describe the image",
        "can you describe the image",
        "Could you provide a description of the image?",
        "What do you see in this image?",
        "Share your thoughts on the content of the image.",
        "Please narrate what's happening in the picture.",
        "Can you give a brief explanation of the image?",
        "Describe the main elements and details present in the image.",
        "In your own words, what is depicted in the image?",
        "Can you outline the key aspects of the image?",
        "What are the most striking features in this image?",
        "Please provide a summary of the image's content.",
        "Describe the overall theme or concept captured in the image.",
        "How would you explain the image's composition and focus?",
        "What is the focal point or main subject of the image?",
        "How do the different components of the image interact with each other?",
        "What would be a fitting caption for this image?",
        "Can you create a concise description that captures the essence of the image?",
        "How would you briefly summarize the content of this image in a phrase or sentence?",
        "Please provide a catchy and relevant caption for this picture.",
        "If you were to give this image a title, what would it be?",
        "Describe the image in one creative sentence.",
        "Please suggest a memorable phrase that encapsulates the image's content.",
        "What engaging phrase would best represent this image?",
        "Can you create an expressive caption that highlights the main theme of the image?",
        "How would you sum up the image's story for a caption?",
        "Provide an eye-catching caption that conveys the image's core message.",
        "If you were to give this image a headline, what would it say?",
        "Can you craft a captivating caption that communicates the essence of the image?",
        "How would you describe the image's content in a powerful caption?",
        "Please provide an inventive title to summarize the scene depicted in the image.",
        "Compose a concise and striking phrase that reflects the image's key elements.",
        "If you were to create a caption for this image, what would it be?",
        "Offer a compelling caption that highlights the central focus of the image.",
        "Can you produce a unique caption that encapsulates the image's overall mood?",
        "Please generate an attention-grabbing caption that would best illustrate the events captured in this image",
        "How would you express the image's main idea in an impactful sentence?",
        "Please create a vivid and concise title that conveys the essence of the picture.",
        "Compose an imaginative caption that reflects the image's most striking features.",
        "What memorable statement would best represent the scene illustrated in this image?",
        "Draft an evocative caption that brings the image to life for the reader.",
        "Can you suggest an insightful caption that highlights the underlying message of the image?",
        "What engaging phrase would effectively convey the action or subject matter depicted in this picture?",
        "How would you encapsulate the image's core theme in a concise and expressive manner?",
        "Please provide a creative and impactful title that captures the spirit of the image.",
        "Craft a captivating caption that showcases the image's most prominent attributes.",
        "What intriguing statement would best sum up the scene presented in this image?",
        "Develop a descriptive caption that paints a vivid picture for the viewer.",
        "Can you give a detailed account of the image's contents?",
        "What are the key elements and features visible in this image?",
        "How would you narrate the events or actions depicted in the picture?",
        "Please share your observations about the various components present in the image.",
        "What is the overall theme or concept captured in this image? Can you describe it?",
    ];

    /// <summary>Follow-up "why" questions appended to A-OKVQA questions (aokvqa_dataset.py).</summary>
    public static readonly string[] ReasonQuestions =
    [
        "Why?",
        "Why is this?",
        "And why?",
        "What is the reason?",
        "And can you tell me why?",
        "Can you tell me why?",
        "Can you tell me the reason?",
    ];
}

/// <summary>A-OKVQA: question + a "why" follow-up; answer "The answer is {choice}. Because {rationales}".</summary>
public sealed class AokvqaReader : DataSetReader
{
    public const string AnnotationFile = "aokvqa/annotations/aokvqa_v1p0_train.json";
    public override string Name => "aokvqa";

    public override IReadOnlyList<string> RequiredPaths(ReadContext c) => [c.Combine(AnnotationFile), c.Combine(LlavaReader.ImageFolder)];

    public override IEnumerable<Conversation> Read(ReadContext context)
    {
        var path = context.Combine(AnnotationFile);
        using var doc = LoadJson(path);
        if (doc.RootElement.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path} should hold a JSON array of A-OKVQA questions.");
        var file = context.Relative(path);
        int index = 0;
        foreach (var record in doc.RootElement.EnumerateArray())
        {
            var id = RecordId(record, index++, "question_id");
            var conversation = Guard(context, file, id, () =>
            {
                var question = RequireString(record, "question");
                var imageId = long.Parse(RequireString(record, "image_id"), System.Globalization.CultureInfo.InvariantCulture);
                var choices = RequireArray(record, "choices");
                var correct = int.Parse(RequireString(record, "correct_choice_idx"), System.Globalization.CultureInfo.InvariantCulture);
                if (correct < 0 || correct >= choices.GetArrayLength())
                    throw new RecordSkipException(SkipReason.MalformedRecord, $"correct_choice_idx {correct} outside the {choices.GetArrayLength()} choices");
                var rationales = RequireArray(record, "rationales").EnumerateArray().Select(r => r.GetString() ?? "").ToArray();
                var random = StableRandom.For(context.Seed, Name, id, "reason");
                var fullQuestion = question + " " + random.Choose(PromptLists.ReasonQuestions);
                var answer = "The answer is " + choices[correct].GetString() + ". Because " + string.Join(" ", rationales);
                var image = new FileImageRef(context.Combine(LlavaReader.ImageFolder, $"{imageId:D12}.jpg"));
                return new Conversation(context.DataSetName, [new Round([image], fullQuestion, answer)], [new SourceId(file, id)]);
            });
            if (conversation is not null) yield return conversation;
        }
    }
}

/// <summary>COCO captions (Karpathy dataset.json): a caption question answered with one of the image's captions.</summary>
public sealed class CocoCaptionReader : DataSetReader
{
    public const string AnnotationFile = "coco_caption/dataset.json";
    public const string ImageFolder = "coco/2014";
    public override string Name => "coco_caption";

    public override IReadOnlyList<string> RequiredPaths(ReadContext c) => [c.Combine(AnnotationFile), c.Combine(ImageFolder)];

    public override IEnumerable<Conversation> Read(ReadContext context)
    {
        var path = context.Combine(AnnotationFile);
        using var doc = LoadJson(path);
        var images = Property(doc.RootElement, path, "images");
        var file = context.Relative(path);
        int index = 0;
        foreach (var record in images.EnumerateArray())
        {
            var id = RecordId(record, index++, "cocoid", "imgid", "filename");
            var conversation = Guard(context, file, id, () =>
            {
                var fileName = RequireString(record, "filename");
                var folder = OptionalString(record, "filepath");
                var imagePath = context.Combine(ImageFolder, fileName);
                // The original reads {root}/coco/2014/{filename}; accept the split sub-folder layout too.
                if (!File.Exists(imagePath) && folder is not null && File.Exists(context.Combine(ImageFolder, folder, fileName)))
                    imagePath = context.Combine(ImageFolder, folder, fileName);
                var captions = RequireArray(record, "sentences").EnumerateArray()
                    .Select(s => s.ValueKind == JsonValueKind.Object && s.TryGetProperty("raw", out var raw) ? raw.GetString() : null)
                    .Where(s => !string.IsNullOrWhiteSpace(s)).ToArray();
                if (captions.Length == 0) throw new RecordSkipException(SkipReason.MalformedRecord, "no 'sentences[].raw' caption");
                var random = StableRandom.For(context.Seed, Name, id, "caption");
                var question = random.Choose(PromptLists.CaptionQuestions);
                var caption = captions[random.Next(captions.Length)]!.Trim();
                return new Conversation(context.DataSetName, [new Round([new FileImageRef(imagePath)], question, caption)], [new SourceId(file, id)]);
            });
            if (conversation is not null) yield return conversation;
        }
    }
}

/// <summary>MiniGPT-4 cc_sbu_align: a caption question answered with the detailed caption. Records with the same
/// image_id share a source id (they are the same source item for the split).</summary>
public sealed class MiniGpt4Reader : DataSetReader
{
    public const string AnnotationFile = "cc_sbu_align/filter_cap.json";
    public const string ImageFolder = "cc_sbu_align/image";
    public override string Name => "minigpt4";

    public override IReadOnlyList<string> RequiredPaths(ReadContext c) => [c.Combine(AnnotationFile), c.Combine(ImageFolder)];

    public override IEnumerable<Conversation> Read(ReadContext context)
    {
        var path = context.Combine(AnnotationFile);
        using var doc = LoadJson(path);
        var annotations = Property(doc.RootElement, path, "annotations");
        var file = context.Relative(path);
        int index = 0;
        foreach (var record in annotations.EnumerateArray())
        {
            int position = index++;
            var label = $"#{position}";
            var conversation = Guard(context, file, label, () =>
            {
                var imageId = RequireString(record, "image_id");
                var caption = RequireString(record, "caption");
                var random = StableRandom.For(context.Seed, Name, position, "caption");
                var question = random.Choose(PromptLists.CaptionQuestions);
                var image = new FileImageRef(context.Combine(ImageFolder, imageId + ".jpg"));
                return new Conversation(context.DataSetName, [new Round([image], question, caption.Trim())], [new SourceId(file, imageId)]);
            });
            if (conversation is not null) yield return conversation;
        }
    }
}

/// <summary>OCR-VQA: one of the record's question/answer pairs per book cover; 1×1 placeholder covers are skipped.</summary>
public sealed class OcrVqaReader : DataSetReader
{
    public const string AnnotationFile = "OCR_VQA/dataset.json";
    public const string ImageFolder = "OCR_VQA/images";
    public override string Name => "ocr_vqa";

    public override IReadOnlyList<string> RequiredPaths(ReadContext c) => [c.Combine(AnnotationFile), c.Combine(ImageFolder)];

    public override IEnumerable<Conversation> Read(ReadContext context)
    {
        var path = context.Combine(AnnotationFile);
        using var doc = LoadJson(path);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path} should hold a JSON object keyed by book id.");
        var file = context.Relative(path);
        foreach (var property in doc.RootElement.EnumerateObject())
        {
            var key = property.Name;
            var record = property.Value;
            var conversation = Guard(context, file, key, () =>
            {
                var url = RequireString(record, "imageURL");
                var questions = RequireArray(record, "questions");
                var answers = RequireArray(record, "answers");
                if (questions.GetArrayLength() == 0 || questions.GetArrayLength() != answers.GetArrayLength())
                    throw new RecordSkipException(SkipReason.MalformedRecord, $"{questions.GetArrayLength()} questions but {answers.GetArrayLength()} answers");
                var extension = Path.GetExtension(new Uri(url, UriKind.RelativeOrAbsolute).IsAbsoluteUri ? new Uri(url).AbsolutePath : url);
                var imagePath = context.Combine(ImageFolder, key + extension);
                if (Vision.Imaging.ImageHeader.TryReadFile(imagePath, out var size) && (size.Width <= 1 || size.Height <= 1))
                    throw new RecordSkipException(SkipReason.PlaceholderImage, $"image {imagePath} is a {size.Width}×{size.Height} placeholder");
                var random = StableRandom.For(context.Seed, Name, key, "pair");
                int pick = random.Next(questions.GetArrayLength());
                var question = questions[pick].GetString() ?? throw new RecordSkipException(SkipReason.MalformedRecord, "question is not a string");
                var answer = answers[pick].ValueKind == JsonValueKind.String ? answers[pick].GetString()! : answers[pick].GetRawText();
                return new Conversation(context.DataSetName, [new Round([new FileImageRef(imagePath)], question, answer)], [new SourceId(file, key)]);
            });
            if (conversation is not null) yield return conversation;
        }
    }
}
