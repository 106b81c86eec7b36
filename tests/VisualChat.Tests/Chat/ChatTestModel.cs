using VisualChat.Data.Synthetic;
using VisualChat.Model;

namespace VisualChat.Tests.Chat;

/// <summary>The tiny preset saved once to a temp folder, plus small PNG images, shared by the chat tests.</summary>
public sealed class ChatTestModel : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "vchat-chat-tests-" + Guid.NewGuid().ToString("N"));
    public string ModelFolder => Path.Combine(Root, "model");

    public ChatTestModel()
    {
        Directory.CreateDirectory(Root);
        using var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 5);
        model.Save(ModelFolder);
    }

    public VisualChatModel Load() => VisualChatModel.Load(ModelFolder);

    /// <summary>A 24×24 PNG whose pixels depend on <paramref name="seed"/>.</summary>
    public static byte[] Png(int seed)
    {
        var random = new Random(seed);
        var rgb = new byte[24 * 24 * 3];
        random.NextBytes(rgb);
        return PngEncoder.EncodeRgb(rgb, 24, 24);
    }

    public string WritePng(string name, int seed)
    {
        var path = Path.Combine(Root, name);
        File.WriteAllBytes(path, Png(seed));
        return path;
    }

    public static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "VisualChat.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("VisualChat.sln not found above " + AppContext.BaseDirectory);
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}
