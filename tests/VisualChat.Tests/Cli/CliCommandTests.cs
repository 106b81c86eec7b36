using System.CommandLine;
using VisualChat.Cli.Commands;
using VisualChat.Inference;
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Model.Presets;
using VisualChat.Tests.Model;

namespace VisualChat.Tests.Cli;

/// <summary>Runs vchat commands in-process through the same root command Program.cs builds.</summary>
public class CliCommandTests
{
    static (int ExitCode, string Out, string Err) Vchat(params string[] args)
    {
        var root = new RootCommand("vchat");
        foreach (var command in CommandCatalog.All()) root.Subcommands.Add(command);
        var output = new StringWriter();
        var error = new StringWriter();
        int code = root.Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public void InitModelTiny_ThenGenerate_ThenTokenize()
    {
        using var folder = new TempFolder();
        var init = Vchat("init-model", "--preset", "tiny", "--out", folder.Path, "--seed", "3");
        Assert.True(init.ExitCode == 0, init.Err);
        Assert.Contains("tokenizer included", init.Out);
        Assert.True(File.Exists(folder.File("model.safetensors")));

        var generate = Vchat("generate", "--model", folder.Path, "--prompt", "The cat", "--max-new-tokens", "8");
        Assert.True(generate.ExitCode == 0, generate.Err);
        Assert.Contains("8 tokens", generate.Err);
        Assert.Contains("tokens/s", generate.Err);

        // What was streamed is exactly the decoded continuation (greedy, so the library gives the same ids).
        var (model, tokenizer) = LanguageModelFolder.Load(folder.Path);
        using var _ = model;
        var prompt = tokenizer.Encode("The cat", addBos: true);
        var ids = TextGenerator.Generate(model, tokenizer, prompt, new GenerationOptions { MaxNewTokens = 8 }).TokenIds;
        string full = tokenizer.Decode(prompt.Concat(ids));
        string continuation = full[tokenizer.Decode(prompt).Length..];
        Assert.Equal(continuation + Environment.NewLine, generate.Out);

        var tokenize = Vchat("tokenize", "--tokenizer", folder.Path, "The cat is here");
        Assert.Equal(0, tokenize.ExitCode);
        Assert.Equal(string.Join(' ', tokenizer.Encode("The cat is here")), tokenize.Out.Trim());
    }

    [Fact]
    public void InitModelDescribe_PrintsLlama2_70BWithoutWriting()
    {
        var result = Vchat("init-model", "--preset", "llama2-70b", "--describe");
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("68,976,648,192", result.Out);
        Assert.Contains("[1024, 8192]", result.Out);
    }

    [Fact]
    public void InitModelList_AndErrors()
    {
        var list = Vchat("init-model", "--list");
        Assert.Equal(0, list.ExitCode);
        foreach (var preset in ModelPresetCatalog.All) Assert.Contains(preset.Name, list.Out);

        using var folder = new TempFolder();
        var neverWritten = folder.File("never-written");
        var unknown = Vchat("init-model", "--preset", "nope", "--out", neverWritten);
        Assert.Equal(1, unknown.ExitCode);
        Assert.Contains("Unknown preset 'nope'", unknown.Err);
        Assert.False(Directory.Exists(neverWritten));

        var badDtype = Vchat("init-model", "--preset", "tiny", "--out", neverWritten, "--dtype", "int3");
        Assert.Equal(1, badDtype.ExitCode);
        Assert.Contains("int3", badDtype.Err);
        Assert.False(Directory.Exists(neverWritten));
    }

    [Fact]
    public void Generate_ReportsAMissingModelFolder()
    {
        var result = Vchat("generate", "--model", "/nonexistent/vchat-model", "--prompt", "hi");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("/nonexistent/vchat-model", result.Err);
    }
}
