using VisualChat.Inference.Chat;
using VisualChat.Inference.Evaluation;

namespace VisualChat.Tests.Chat;

public class ChatInputTests
{
    static bool Exists(string path) => path is "cat.png" or "/tmp/my dog.jpg" or "/abs/photo.JPG";

    [Theory]
    [InlineData("/image cat.png \"/tmp/my dog.jpg\"", ChatCommandKind.Image, new[] { "cat.png", "/tmp/my dog.jpg" })]
    [InlineData("/images", ChatCommandKind.Images, new string[0])]
    [InlineData("/reset", ChatCommandKind.Reset, new string[0])]
    [InlineData("/save chat.json", ChatCommandKind.Save, new[] { "chat.json" })]
    [InlineData("/load chat.json", ChatCommandKind.Load, new[] { "chat.json" })]
    [InlineData("/params temperature=0.7 top_p=0.9", ChatCommandKind.Params, new[] { "temperature=0.7", "top_p=0.9" })]
    [InlineData("/help", ChatCommandKind.Help, new string[0])]
    [InlineData("/quit", ChatCommandKind.Quit, new string[0])]
    [InlineData("/frobnicate", ChatCommandKind.Unknown, new string[0])]
    public void SlashCommandsParseWithTheirArguments(string line, ChatCommandKind kind, string[] arguments)
    {
        var input = ChatInput.Parse(line, Exists);
        Assert.Equal(kind, input.Kind);
        Assert.Equal(arguments, input.Arguments);
    }

    [Fact]
    public void PastedPathsUrlsAndDataUrisBecomeAttachments()
    {
        var input = ChatInput.Parse("Compare cat.png with https://example.org/a.jpg?x=1 and data:image/png;base64,iVBORw0KGgo= please, not notes.txt or missing.png", Exists);
        Assert.Equal(ChatCommandKind.Message, input.Kind);
        Assert.Equal(new[] { "cat.png", "https://example.org/a.jpg?x=1", "data:image/png;base64,iVBORw0KGgo=" }, input.Attachments);
        Assert.Equal("Compare with and please, not notes.txt or missing.png", input.Text);
    }

    [Fact]
    public void AMessageStartingWithAnExistingAbsolutePathIsNotACommand()
    {
        var input = ChatInput.Parse("/abs/photo.JPG what is this?", Exists);
        Assert.Equal(ChatCommandKind.Message, input.Kind);
        Assert.Equal(new[] { "/abs/photo.JPG" }, input.Attachments);
        Assert.Equal("what is this?", input.Text);
    }

    [Fact]
    public void TranscriptRoundTripsAndRejectsForeignFiles()
    {
        var folder = Directory.CreateTempSubdirectory("transcript").FullName;
        try
        {
            var path = Path.Combine(folder, "chat.json");
            var transcript = new ChatTranscript { Model = "m", Rounds = [new() { Images = ["a.png", "b.png"], Question = "Q1", Answer = "A1" }, new() { Question = "Q2", Answer = "A2" }] };
            transcript.Save(path);
            var loaded = ChatTranscript.Load(path);
            Assert.Equal(transcript.Rounds.Select(r => (string.Join("|", r.Images), r.Question, r.Answer)), loaded.Rounds.Select(r => (string.Join("|", r.Images), r.Question, r.Answer)));
            File.WriteAllText(path, "{\"rounds\": []}");
            Assert.Contains("chat.json", Assert.Throws<InvalidDataException>(() => ChatTranscript.Load(path)).Message);
        }
        finally { Directory.Delete(folder, true); }
    }

    [Fact]
    public void CsvEscapesCommasQuotesAndNewlinesAndParsesBack()
    {
        var output = new StringWriter();
        using (var csv = new CsvWriter(output))
        {
            csv.WriteRow("test_name", "image_path", "question", "answer");
            csv.WriteRow("cats", "a.jpg b.jpg", "What, exactly?", "He said \"hi\"\nand left.");
        }
        Assert.Equal("test_name,image_path,question,answer\ncats,a.jpg b.jpg,\"What, exactly?\",\"He said \"\"hi\"\"\nand left.\"\n", output.ToString());
        var rows = CsvWriter.Parse(output.ToString());
        Assert.Equal(2, rows.Count);
        Assert.Equal(new[] { "cats", "a.jpg b.jpg", "What, exactly?", "He said \"hi\"\nand left." }, rows[1]);
    }
}
