using System.CommandLine;
using VisualChat.Cli.Commands;
using VisualChat.Inference.Chat;

namespace VisualChat.Tests.Chat;

/// <summary>Runs <c>vchat chat</c> in-process on scripted stdin (Console.In is process-wide, hence one collection).</summary>
[Collection(nameof(ConsoleInputCollection))]
public sealed class ChatCommandTests(ChatTestModel fixture) : IClassFixture<ChatTestModel>
{
    (int Rc, string Output, string Error) RunChat(string script, params string[] extra)
    {
        var root = new RootCommand { ChatCommand.Create() };
        var output = new StringWriter();
        var error = new StringWriter();
        var previous = Console.In;
        Console.SetIn(new StringReader(script));
        try {
            int rc = root.Parse(["chat", "--model", fixture.ModelFolder, "--max-new-tokens", "5", .. extra]).Invoke(new InvocationConfiguration { Output = output, Error = error });
            return (rc, output.ToString(), error.ToString());
        } finally {
            Console.SetIn(previous);
        }
    }

    [Fact]
    public void ScriptedSession_ImagesParamsErrorsSaveLoad()
    {
        var image1 = fixture.WritePng("cli1.png", 11);
        var image2 = fixture.WritePng("cli2.png", 12);
        var saved = Path.Combine(fixture.Root, "cli-conversation.json");
        var missing = Path.Combine(fixture.Root, "missing.png");
        var script = string.Join('\n',
            $"/image {image1}",
            "What is shown?",
            "/frobnicate",
            $"/image {missing}",
            "/params top_k=3 seed=7",
            "/params temperature=banana",
            "/params temperature=0",
            $"Compare with this one {image2}",
            "/images",
            $"/save {saved}",
            "Third?",
            $"/load {saved}",
            "Third?",
            "/help");
        var (rc, output, error) = RunChat(script); // ends on end of input, without /quit
        Assert.Equal(0, rc);
        Assert.Contains(fixture.ModelFolder, output);
        Assert.Contains("context 1024", output);
        Assert.Contains($"Image 1: {image1}", output);
        Assert.Contains($"Image 2: {image2}", output);
        Assert.Contains("top_k=3", output);
        Assert.Contains("seed=7", output);
        Assert.Contains("unknown command '/frobnicate'", error);
        Assert.Contains("missing.png", error);
        Assert.Contains("banana", error);
        Assert.Contains("/image", ChatLoop.Help);
        Assert.Contains("Loaded 2 rounds", output);

        var transcript = ChatTranscript.Load(saved);
        Assert.Equal(2, transcript.Rounds.Count);
        Assert.Equal([image1], transcript.Rounds[0].Images);
        Assert.Equal([image2], transcript.Rounds[1].Images);
        Assert.Equal("Compare with this one", transcript.Rounds[1].Question);

        // The answer after /load equals the answer given before saving (greedy, same conversation).
        var lines = output.Split('\n');
        var answers = lines.Where(l => l.StartsWith("> ") && !l.StartsWith("> Image") && !l.StartsWith("> Saved") && !l.StartsWith("> Loaded")
                                        && !l.StartsWith("> temperature") && !l.StartsWith("> Conversation")).ToList();
        var afterSave = output[output.IndexOf("Saved 2 rounds", StringComparison.Ordinal)..];
        var thirdBefore = afterSave.Split('\n')[1];
        var afterLoad = output[output.IndexOf("Loaded 2 rounds", StringComparison.Ordinal)..];
        var thirdAfter = afterLoad.Split('\n')[1];
        Assert.NotEmpty(answers);
        Assert.Equal(thirdBefore, thirdAfter);
    }

    [Fact]
    public void ContextOverflow_PrintsResetHint_AndTheChatGoesOn()
    {
        var huge = string.Join(' ', Enumerable.Repeat("why", 400));
        var (rc, output, error) = RunChat($"{huge}\n/reset\nHello?\n/quit\nnever read\n");
        Assert.Equal(0, rc);
        Assert.Contains("/reset", error);
        Assert.Contains("context holds 1024", error);
        Assert.Contains("Conversation reset.", output);
    }

    [Fact]
    public void MissingModelFolder_IsAClearError()
    {
        var root = new RootCommand { ChatCommand.Create() };
        var error = new StringWriter();
        int rc = root.Parse(["chat", "--model", Path.Combine(fixture.Root, "no-such-model")]).Invoke(new InvocationConfiguration { Output = new StringWriter(), Error = error });
        Assert.Equal(1, rc);
        Assert.Contains("no-such-model", error.ToString());

        // Without --model the default folder is relative to the working directory: run from an empty temporary folder
        // (this class is in a non-parallel collection, so changing the process's directory touches no other test).
        string previous = Directory.GetCurrentDirectory();
        using var empty = new VisualChat.Tests.Model.TempFolder();
        Directory.SetCurrentDirectory(empty.Path);
        try {
            error = new StringWriter();
            rc = root.Parse(["chat"]).Invoke(new InvocationConfiguration { Output = new StringWriter(), Error = error });
            Assert.Equal(1, rc);
            Assert.Contains("--model", error.ToString());
            Assert.Contains(ChatCommand.DefaultModelFolder, error.ToString());
        } finally {
            Directory.SetCurrentDirectory(previous);
        }
    }
}

[CollectionDefinition(nameof(ConsoleInputCollection), DisableParallelization = true)]
public sealed class ConsoleInputCollection;
