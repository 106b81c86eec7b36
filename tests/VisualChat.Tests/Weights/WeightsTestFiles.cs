namespace VisualChat.Tests.Weights;

/// <summary>Fixture lookup and a scratch folder deleted after each test.</summary>
internal sealed class WeightsTestFiles : IDisposable
{
    public string Folder { get; } = Directory.CreateTempSubdirectory("vchat-weights-").FullName;

    public string PathOf(string name) => System.IO.Path.Combine(Folder, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Folder, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover temp folder must not fail a test.
        }
    }

    /// <summary>The committed fixture <paramref name="name"/> under tests/VisualChat.Tests/Weights/Fixtures.</summary>
    public static string Fixture(string name)
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(System.IO.Path.Combine(directory.FullName, "VisualChat.sln")))
        {
            directory = directory.Parent;
        }
        if (directory is null)
        {
            throw new DirectoryNotFoundException($"No VisualChat.sln above '{AppContext.BaseDirectory}'.");
        }
        return System.IO.Path.Combine(directory.FullName, "tests", "VisualChat.Tests", "Weights", "Fixtures", name);
    }
}
