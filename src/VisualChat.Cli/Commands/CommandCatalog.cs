using System.CommandLine;

namespace VisualChat.Cli.Commands;

/// <summary>Every subcommand of <c>vchat</c>, one class each in this folder.</summary>
public static class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return DemoCommand.Create();
        yield return ChatCommand.Create();
        yield return EvalCommand.Create();
        yield return TrainCommand.Create();
        yield return ExportCommand.Create();
        yield return ImportCommand.Create();
        yield return QuantizeCommand.Create();
        yield return InitModelCommand.Create();
        yield return GenerateCommand.Create();
        yield return ServeCommand.Create();
        yield return TokenizeCommand.Create();
        yield return DataInspectCommand.Create();
        yield return BenchCommand.Create();
    }
}
