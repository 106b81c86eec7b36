using System.IO.Compression;
using System.Text;
using System.Text.Json;
using VisualChat.Text;

namespace VisualChat.Tests.Data;

/// <summary>One id per character (char + 100), "&lt;image&gt;" as added token 5, BOS 1, EOS 2, no pad.</summary>
public sealed class FakeCharTokenizer : ITokenizer
{
    public const int ImageId = 5;
    public int VocabSize => 70000;
    public int BosId => 1;
    public int EosId => 2;
    public int PadId => -1;

    public IReadOnlyList<int> Encode(string text, bool addBos = false, bool addEos = false)
    {
        var ids = new List<int>(text.Length + 2);
        if (addBos) ids.Add(BosId);
        for (int i = 0; i < text.Length; i++)
        {
            if (string.CompareOrdinal(text, i, "<image>", 0, 7) == 0)
            {
                ids.Add(ImageId);
                i += 6;
            }
            else
            {
                ids.Add(text[i] + 100);
            }
        }
        if (addEos) ids.Add(EosId);
        return ids;
    }

    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        var sb = new StringBuilder();
        foreach (var id in ids)
        {
            if (id == ImageId) sb.Append("<image>");
            else if (id >= 100) sb.Append((char)(id - 100));
            else if (!skipSpecialTokens) sb.Append(id == BosId ? "<s>" : "</s>");
        }
        return sb.ToString();
    }

    public int? TokenToId(string token) => token == "<image>" ? ImageId : token.Length == 1 ? token[0] + 100 : null;
}

/// <summary>A temp folder deleted at dispose.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("vchat-data-").FullName;

    public string File(string relative, string content)
    {
        var full = Combine(relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        System.IO.File.WriteAllText(full, content);
        return full;
    }

    public string Json(string relative, object value) => File(relative, JsonSerializer.Serialize(value));

    public string Png(string relative, int width = 2, int height = 2)
    {
        var full = Combine(relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        System.IO.File.WriteAllBytes(full, TinyPng.Encode(width, height));
        return full;
    }

    public string Combine(string relative) => System.IO.Path.Combine(Path, relative);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>A minimal valid PNG encoder (8-bit RGB, no filtering).</summary>
public static class TinyPng
{
    private static readonly uint[] CrcTable = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    public static byte[] Encode(int width, int height)
    {
        using var png = new MemoryStream();
        png.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        var header = new byte[13];
        WriteBigEndian(header, 0, (uint)width);
        WriteBigEndian(header, 4, (uint)height);
        header[8] = 8; // bit depth
        header[9] = 2; // RGB
        Chunk(png, "IHDR", header);
        using var raw = new MemoryStream();
        for (int y = 0; y < height; y++)
        {
            raw.WriteByte(0);
            for (int x = 0; x < width; x++) raw.Write([(byte)(x * 50), (byte)(y * 50), 128]);
        }
        using var compressed = new MemoryStream();
        using (var z = new ZLibStream(compressed, CompressionLevel.Optimal, leaveOpen: true)) raw.WriteTo(z);
        Chunk(png, "IDAT", compressed.ToArray());
        Chunk(png, "IEND", []);
        return png.ToArray();
    }

    private static void Chunk(Stream s, string type, byte[] data)
    {
        var length = new byte[4];
        WriteBigEndian(length, 0, (uint)data.Length);
        s.Write(length);
        var typed = Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
        s.Write(typed);
        uint crc = 0xFFFFFFFF;
        foreach (var b in typed) crc = CrcTable[(crc ^ b) & 0xFF] ^ (crc >> 8);
        var crcBytes = new byte[4];
        WriteBigEndian(crcBytes, 0, crc ^ 0xFFFFFFFF);
        s.Write(crcBytes);
    }

    private static void WriteBigEndian(byte[] b, int at, uint v)
    {
        b[at] = (byte)(v >> 24); b[at + 1] = (byte)(v >> 16); b[at + 2] = (byte)(v >> 8); b[at + 3] = (byte)v;
    }
}

public static class SharedData
{
    public static string Root
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !System.IO.File.Exists(System.IO.Path.Combine(dir.FullName, "VisualChat.sln"))) dir = dir.Parent;
            if (dir is null) throw new InvalidOperationException("VisualChat.sln not found above " + AppContext.BaseDirectory);
            return System.IO.Path.GetFullPath(System.IO.Path.Combine(dir.FullName, "..", "shared"));
        }
    }

    public static string LlavaSample => System.IO.Path.Combine(Root, "data", "llava", "llava_instruct_100.json");
    public static string MiniGpt4Sample => System.IO.Path.Combine(Root, "data", "minigpt4", "filter_cap.json");
    public static string DsvcApp => System.IO.Path.Combine(Root, "data", "dsvc-eval");
}
