using System.CommandLine;

namespace VisualChat.Cli.Commands;

/// <summary>How every command ends on an unexpected exception: one line on stderr naming the problem, exit 1; the
/// stack trace only with <c>--verbose</c>.</summary>
public static class CliErrors
{
    public static readonly Option<bool> VerboseOption = new("--verbose") { Description = "Show stack traces of errors.", Recursive = true };

    public static int Report(string command, Exception error, bool verbose, TextWriter? writer = null)
    {
        writer ??= Console.Error;
        var inner = error is AggregateException { InnerExceptions.Count: 1 } aggregate ? aggregate.InnerExceptions[0] : error;
        if (inner is System.Reflection.TargetInvocationException { InnerException: { } wrapped }) inner = wrapped;
        var message = inner.Message.ReplaceLineEndings(" ").Trim();
        writer.WriteLine($"vchat {command}: {message}{(inner is IOException or InvalidDataException or UnauthorizedAccessException or ArgumentException ? "" : $" ({inner.GetType().Name})")}");
        if (verbose) writer.WriteLine(inner.ToString());
        return 1;
    }
}
