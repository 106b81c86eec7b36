using System.Diagnostics;
using System.IO.Compression;
using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace VisualChat.Tests.Packaging;

/// <summary>
/// The packages as a user gets them: <c>dotnet pack</c> of the core library and of the <c>vchat</c> tool into a local
/// feed, <c>dotnet tool install</c> of the tool, which writes a tiny model folder, and a new console app that references
/// only the <c>.nupkg</c> (plus the CPU libtorch backend) and runs the README's "From .NET" code on that model. On
/// Debian 12 the app only starts if the package's buildTransitive files patched its output folder.
/// </summary>
/// <remarks>Each run packs a unique version so that the machine's NuGet cache can never serve an older build; the
/// versions it cached are removed at the end.</remarks>
public sealed class PackageConsumerTests : IDisposable
{
    static readonly string RepoRoot = FindRepoRoot();
    readonly string work = Path.Combine(Path.GetTempPath(), "visualchat-pack-" + Guid.NewGuid().ToString("N"));
    readonly string version = $"0.0.1-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";

    public PackageConsumerTests() => Directory.CreateDirectory(work);

    [Fact]
    public void PackedLibraryAndToolWorkInANewApp()
    {
        var feed = Path.Combine(work, "feed");
        // The projects were just built by `dotnet test`; pack those outputs (the test's own configuration).
        string configuration = new DirectoryInfo(Path.TrimEndingDirectorySeparator(AppContext.BaseDirectory)).Parent!.Name;
        Run("dotnet", RepoRoot, "pack", "src/VisualChat/VisualChat.csproj", "--no-build", "-c", configuration, "-o", feed, $"-p:Version={version}");
        Run("dotnet", RepoRoot, "pack", "src/VisualChat.Cli/VisualChat.Cli.csproj", "--no-build", "-c", configuration, "-o", feed, $"-p:Version={version}");

        var nuspec = ReadNuspec(Path.Combine(feed, $"VisualChat.{version}.nupkg"));
        foreach (var element in new[] { "description", "authors", "license", "readme", "icon", "tags", "repository" })
            Assert.False(string.IsNullOrWhiteSpace(Element(nuspec, element)?.ToString()), $"The VisualChat package has no <{element}>.");
        var dependencies = nuspec.Descendants().Where(e => e.Name.LocalName == "dependency").Select(e => (string)e.Attribute("id")!).ToList();
        Assert.Contains("TorchSharp", dependencies);
        // The native backend is the application's choice; plotting belongs to the training package.
        Assert.DoesNotContain(dependencies, d => d.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase) || d.Contains("cuda", StringComparison.OrdinalIgnoreCase)
            || d.StartsWith("ScottPlot", StringComparison.Ordinal) || d.StartsWith("SkiaSharp", StringComparison.Ordinal));
        using (var package = ZipFile.OpenRead(Path.Combine(feed, $"VisualChat.{version}.nupkg")))
        {
            foreach (var file in new[] { "buildTransitive/VisualChat.props", "buildTransitive/VisualChat.targets", "buildTransitive/PatchLibTorchSharp.targets", "README.md", "icon.png" })
                Assert.NotNull(package.GetEntry(file));
        }

        // The tool, installed from the feed, writes the model folder the app will load.
        var tools = Path.Combine(work, "tools");
        Run("dotnet", work, "tool", "install", "VisualChat.Cli", "--tool-path", tools, "--add-source", feed, "--version", version);
        var app = Path.Combine(work, "app");
        Directory.CreateDirectory(app);
        var help = Run(Path.Combine(tools, "vchat"), app, "--help");
        Assert.Contains("vchat", help);
        Run(Path.Combine(tools, "vchat"), app, "init-model", "--preset", "tiny", "--kind", "visualchat", "--out", "models/tiny-trained", "--seed", "5");

        // A new console app: the README's code, the package from the feed, and the CPU backend.
        File.WriteAllText(Path.Combine(app, "Program.cs"), ReadmeSnippet());
        File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="VisualChat" Version="{version}" />
                <PackageReference Include="libtorch-cpu-linux-x64" Version="2.10.0" />
              </ItemGroup>
            </Project>
            """);
        // Added to the machine's sources (no <clear/>): TorchSharp and libtorch come from the usual feed.
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="visualchat-local" value="{feed}" />
              </packageSources>
            </configuration>
            """);
        // Isolated from this repository's Directory.Build.props/targets, as a user's app is.
        File.WriteAllText(Path.Combine(app, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(app, "Directory.Build.targets"), "<Project />");
        var images = Path.Combine(RepoRoot, "..", "shared", "data", "dsvc-eval", "eval", "eval_data", "images");
        File.Copy(Path.Combine(images, "cats", "cat.png"), Path.Combine(app, "cat.png"));
        File.Copy(Path.Combine(images, "cats", "cat.png"), Path.Combine(app, "a.png"));
        File.Copy(Directory.EnumerateFiles(images, "*.jpg", SearchOption.AllDirectories).Order().First(), Path.Combine(app, "b.jpg"));

        Run("dotnet", app, "build", "-c", "Release", "-o", Path.Combine(app, "out"));
        var output = Run("dotnet", app, Path.Combine(app, "out", "App.dll"));
        Assert.False(string.IsNullOrWhiteSpace(output), "The app printed no answer.");
        Assert.Equal("false", Regex.Match(File.ReadAllText(Path.Combine(app, "out", "App.runtimeconfig.json")), "\"System.GC.Concurrent\":\\s*(\\w+)").Groups[1].Value);
    }

    /// <summary>The first C# block of the README's "From .NET" section, verbatim.</summary>
    static string ReadmeSnippet()
    {
        var readme = File.ReadAllText(Path.Combine(RepoRoot, "README.md"));
        int section = readme.IndexOf("### From .NET", StringComparison.Ordinal);
        Assert.True(section >= 0, "README.md has no '### From .NET' section.");
        var match = Regex.Match(readme[section..], "```csharp\\n(.*?)```", RegexOptions.Singleline);
        Assert.True(match.Success, "README.md's 'From .NET' section has no ```csharp block.");
        return match.Groups[1].Value;
    }

    static XElement ReadNuspec(string nupkg)
    {
        using var package = ZipFile.OpenRead(nupkg);
        var entry = package.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal));
        using var stream = entry.Open();
        return XElement.Load(stream);
    }

    static XElement? Element(XElement nuspec, string name) => nuspec.Descendants().FirstOrDefault(e => e.Name.LocalName == name);

    static string Run(string fileName, string workingDirectory, params string[] arguments)
    {
        var start = new ProcessStartInfo(fileName) { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        // A child `dotnet` must not inherit the test host's MSBuild/runner settings.
        foreach (var name in new[] { "MSBuildExtensionsPath", "MSBuildSDKsPath", "MSBUILD_EXE_PATH", "DOTNET_HOST_PATH", "VSTEST_HOST_DEBUG" })
            start.Environment.Remove(name);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromMinutes(8))) {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{fileName} {string.Join(' ', arguments)} did not finish in 8 minutes.");
        }
        Assert.True(process.ExitCode == 0, $"{fileName} {string.Join(' ', arguments)} exited with {process.ExitCode}:\n{stdout}\n{stderr.Result}");
        return stdout;
    }

    static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "VisualChat.sln"))) return dir.FullName;
        throw new InvalidOperationException($"No VisualChat.sln above {AppContext.BaseDirectory}.");
    }

    public void Dispose()
    {
        try { Directory.Delete(work, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        // The versions this run put into the machine's NuGet cache (unique to the run, never reused).
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        foreach (var id in new[] { "visualchat", "visualchat.cli" })
            try { Directory.Delete(Path.Combine(cache, id, version), recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
