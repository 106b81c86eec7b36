using System.CommandLine;
using VisualChat.Text;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat tokenize --tokenizer PATH TEXT</c>: prints the token ids of TEXT (no BOS), space-separated.</summary>
public static class TokenizeCommand
{
    public static Command Create()
    {
        var tokenizerOption = new Option<string>("--tokenizer")
        {
            Description = "tokenizer.model, tokenizer.json, or a folder holding one (its added tokens are applied)",
            Required = true,
        };
        var textArgument = new Argument<string>("text") { Description = "Text to tokenize" };
        var command = new Command("tokenize", "Print the LLaMA token ids of a text (SentencePiece-exact, no BOS)");
        command.Options.Add(tokenizerOption);
        command.Arguments.Add(textArgument);
        command.SetAction(parseResult =>
        {
            string path = parseResult.GetValue(tokenizerOption)!;
            string text = parseResult.GetValue(textArgument) ?? "";
            SentencePieceTokenizer tokenizer;
            try
            {
                tokenizer = TokenizerFactory.FromPath(path);
            }
            catch (Exception e) when (e is IOException or InvalidDataException or NotSupportedException or UnauthorizedAccessException)
            {
                // The loaders' messages already name the file; keep the path in front for the folder case.
                parseResult.InvocationConfiguration.Error.WriteLine($"vchat tokenize: cannot load tokenizer '{path}': {e.Message}");
                return 1;
            }
            parseResult.InvocationConfiguration.Output.WriteLine(string.Join(' ', tokenizer.Encode(text)));
            return 0;
        });
        return command;
    }
}
