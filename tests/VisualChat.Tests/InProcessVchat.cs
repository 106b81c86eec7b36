using System.CommandLine;
using VisualChat.Cli.Commands;

namespace VisualChat.Tests;

/// <summary>Runs a vchat command in-process as Program.cs does: the same root command and options, and an unhandled
/// exception reported as Program.cs reports it (one line), so exit codes and messages are the user's.</summary>
public static class InProcessVchat
{
    public sealed record Result(int Code, string Out, string Err);

    public static Result Run(params string[] args)
    {
        var root = new RootCommand("vchat");
        root.Options.Add(CliErrors.VerboseOption);
        foreach (var command in CommandCatalog.All()) root.Subcommands.Add(command);
        var parse = root.Parse(args);
        var output = new StringWriter();
        var error = new StringWriter();
        parse.InvocationConfiguration.Output = output;
        parse.InvocationConfiguration.Error = error;
        parse.InvocationConfiguration.EnableDefaultExceptionHandler = false;
        int code;
        try { code = parse.Invoke(); }
        catch (Exception e) { code = CliErrors.Report(parse.CommandResult.Command.Name, e, false, error); }
        return new Result(code, output.ToString(), error.ToString());
    }
}
