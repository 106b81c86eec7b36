namespace VisualChat.Tests;

/// <summary>
/// Tests that change process-wide state (Console.Out/Error, environment variables, libtorch's thread count) run in
/// this collection: xunit runs it alone, after the parallel collections, so no other test sees the change.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideStateCollection
{
    public const string Name = "process-wide state";
}
