using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VisualChat.Weights;

/// <summary>
/// Writes a model folder atomically and checks it on load. The files are written into a temporary sibling
/// <c>name.tmp-&lt;guid&gt;/</c>, listed with their sizes and SHA-256 in <see cref="ManifestFile"/>, fsynced, and the
/// sibling is renamed into place (an existing folder is first renamed to <c>name.old-&lt;guid&gt;/</c> and deleted
/// after), so a reader sees the old model or the new one, never a mix. A kill between the two renames leaves both
/// complete copies; the next write (or <see cref="Recover"/>) finishes the swap.
/// </summary>
public static class ModelFolderWriter
{
    public const string ManifestFile = "model-manifest.json";
    const string Format = "visualchat-model-folder/1";

    /// <summary>Writes <paramref name="folder"/> through <paramref name="writeFiles"/>, which fills the temporary folder it is given.</summary>
    public static void Write(string folder, Action<string> writeFiles)
    {
        folder = Path.GetFullPath(folder).TrimEnd(Path.DirectorySeparatorChar);
        var parent = Path.GetDirectoryName(folder) ?? throw new ArgumentException($"Cannot write a model folder at the root '{folder}'.");
        Directory.CreateDirectory(parent);
        if (File.Exists(folder)) throw new IOException($"'{folder}' is a file; give a folder path for the model.");
        Recover(folder);
        var name = Path.GetFileName(folder);
        var temporary = Path.Combine(parent, $"{name}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temporary);
        try
        {
            writeFiles(temporary);
            WriteManifest(temporary);
            foreach (var file in Directory.GetFiles(temporary, "*", SearchOption.AllDirectories)) Fsync(file);
        }
        catch
        {
            try { Directory.Delete(temporary, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
        string? old = null;
        if (Directory.Exists(folder))
        {
            old = Path.Combine(parent, $"{name}.old-{Guid.NewGuid():N}");
            Directory.Move(folder, old);
        }
        Directory.Move(temporary, folder);
        if (old is not null) Directory.Delete(old, recursive: true);
    }

    /// <summary>
    /// Cleans what an interrupted <see cref="Write"/> of <paramref name="folder"/> left: a complete temporary copy whose
    /// rename never happened becomes the folder (it is the newer model); incomplete copies and replaced ones are deleted.
    /// </summary>
    public static void Recover(string folder)
    {
        folder = Path.GetFullPath(folder).TrimEnd(Path.DirectorySeparatorChar);
        var parent = Path.GetDirectoryName(folder);
        if (parent is null || !Directory.Exists(parent)) return;
        var name = Path.GetFileName(folder);
        var temporaries = Directory.GetDirectories(parent, $"{name}.tmp-*");
        var olds = Directory.GetDirectories(parent, $"{name}.old-*");
        if (temporaries.Length == 0 && olds.Length == 0) return;
        if (!Directory.Exists(folder))
        {
            // Killed between "folder → old" and "temporary → folder": the complete temporary is the newer model.
            var complete = temporaries.Where(t => File.Exists(Path.Combine(t, ManifestFile)) && Verify(t) is null)
                .OrderByDescending(t => File.GetLastWriteTimeUtc(Path.Combine(t, ManifestFile))).FirstOrDefault()
                ?? olds.FirstOrDefault();
            if (complete is not null) Directory.Move(complete, folder);
        }
        foreach (var leftover in temporaries.Concat(olds).Where(Directory.Exists))
            Directory.Delete(leftover, recursive: true);
    }

    static void WriteManifest(string folder)
    {
        var files = new JsonArray();
        foreach (var file in Directory.GetFiles(folder, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var relative = Path.GetRelativePath(folder, file).Replace(Path.DirectorySeparatorChar, '/');
            if (relative == ManifestFile) continue;
            files.Add(new JsonObject { ["path"] = relative, ["size"] = new FileInfo(file).Length, ["sha256"] = Sha256(file) });
        }
        var manifest = new JsonObject { ["format"] = Format, ["files"] = files };
        File.WriteAllText(Path.Combine(folder, ManifestFile), manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// Checks every file the folder's manifest lists (present; weights and tokenizer files also same size and SHA-256) and that no weights file is
    /// unlisted; throws naming the first bad file. A folder without a manifest (written by other tools) passes.
    /// </summary>
    public static void VerifyOrThrow(string folder)
    {
        var (problem, missing) = Check(folder);
        if (missing is not null) throw new FileNotFoundException(problem, missing);
        if (problem is not null) throw new InvalidDataException(problem);
    }

    /// <summary>The first problem of <paramref name="folder"/> against its manifest, or null when it is intact (or has none).</summary>
    public static string? Verify(string folder) => Check(folder).Problem;

    static (string? Problem, string? MissingFile) Check(string folder)
    {
        var manifestPath = Path.Combine(folder, ManifestFile);
        if (!File.Exists(manifestPath)) return (null, null);
        JsonArray files;
        try
        {
            files = JsonNode.Parse(File.ReadAllText(manifestPath))?["files"]?.AsArray()
                ?? throw new InvalidDataException("no \"files\" list");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or InvalidDataException)
        {
            return ($"{manifestPath} is unreadable ({e.Message}); the model folder is damaged: export or save it again.", null);
        }
        var listed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in files)
        {
            var relative = node?["path"]?.GetValue<string>();
            var size = node?["size"]?.GetValue<long>();
            var hash = node?["sha256"]?.GetValue<string>();
            if (relative is null || size is null || hash is null || relative.Contains("..", StringComparison.Ordinal))
                return ($"{manifestPath} has a malformed entry; the model folder is damaged: export or save it again.", null);
            listed.Add(relative);
            var path = Path.Combine(folder, relative);
            if (!File.Exists(path))
                return ($"{path} is missing (listed in {ManifestFile}); the model folder is incomplete: export or save it again.", path);
            // JSON configs are the user's to edit (attention mode, template, preprocessing); they are validated when
            // parsed. The manifest guards the files no one edits by hand: weights and tokenizer.
            if (relative.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) continue;
            long actual = new FileInfo(path).Length;
            if (actual != size)
                return ($"{path} is {actual} bytes but {ManifestFile} lists {size}; the file is truncated or from another model: export or save the folder again.", null);
            if (!string.Equals(Sha256(path), hash, StringComparison.OrdinalIgnoreCase))
                return ($"{path} does not match its SHA-256 in {ManifestFile}; the file is corrupt or from another model: export or save the folder again.", null);
        }
        foreach (var file in Directory.GetFiles(folder, "*.safetensors", SearchOption.AllDirectories))
        {
            var relative = Path.GetRelativePath(folder, file).Replace(Path.DirectorySeparatorChar, '/');
            if (!listed.Contains(relative))
                return ($"{file} is not listed in {ManifestFile}; it was added after the model was written (a mixed folder): remove it or save the model again.", null);
        }
        return (null, null);
    }

    static string Sha256(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant();
    }

    static void Fsync(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        stream.Flush(flushToDisk: true);
    }
}
