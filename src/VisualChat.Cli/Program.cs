using System.CommandLine;
using VisualChat.Cli.Commands;

var root = new RootCommand("vchat — train and chat with multi-image, multi-round vision-language models (DeepSpeed-VisualChat on .NET)");
root.Options.Add(CliErrors.VerboseOption);
foreach (var command in CommandCatalog.All())
    root.Subcommands.Add(command);
var parse = root.Parse(args);
// Unhandled exceptions become one line naming the problem (stack traces only with --verbose), never a crash dump.
parse.InvocationConfiguration.EnableDefaultExceptionHandler = false;
try
{
    return parse.Invoke();
}
catch (Exception e)
{
    return CliErrors.Report(parse.CommandResult.Command.Name, e, parse.GetValue(CliErrors.VerboseOption));
}
