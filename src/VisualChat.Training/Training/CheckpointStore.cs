using System.Text.Json;
using System.Text.Json.Nodes;

namespace VisualChat.Training;

/// <summary>A complete checkpoint folder and its manifest.</summary>
public sealed record CheckpointInfo(string Path, string Name, long Step, int Epoch, double? EvalLoss);

/// <summary>
/// Checkpoint folders under a run dir. A checkpoint is written into <c>name.tmp-&lt;guid&gt;/</c>, every file fsynced,
/// <c>checkpoint.json</c> (the completion marker, written last) included; then renamed to <c>name/</c> — an older
/// <c>name/</c> is first renamed to <c>name.old-&lt;guid&gt;/</c> and deleted after. A folder without a complete
/// manifest (a crash mid-write) is never listed.
/// </summary>
public static class CheckpointStore
{
    public const string ManifestFile = "checkpoint.json";
    public const string WeightsFile = "model.safetensors";
    public const string OptimizerFile = "optimizer.safetensors";
    public const string StateFile = "trainer_state.json";

    /// <summary>Writes a checkpoint atomically; <paramref name="writeFiles"/> fills the temporary folder.</summary>
    public static string Write(string runDir, string name, Action<string> writeFiles, JsonObject manifest)
    {
        Directory.CreateDirectory(runDir);
        var final = Path.Combine(runDir, name);
        var temporary = Path.Combine(runDir, $"{name}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temporary);
        try
        {
            writeFiles(temporary);
            manifest["complete"] = true;
            File.WriteAllText(Path.Combine(temporary, ManifestFile), manifest.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            foreach (var file in Directory.GetFiles(temporary)) Fsync(file);
        }
        catch
        {
            try { Directory.Delete(temporary, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
        string? old = null;
        if (Directory.Exists(final))
        {
            old = Path.Combine(runDir, $"{name}.old-{Guid.NewGuid():N}");
            Directory.Move(final, old);
        }
        Directory.Move(temporary, final);
        if (old is not null) Directory.Delete(old, recursive: true);
        return final;
    }

    static void Fsync(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>The checkpoint in <paramref name="folder"/>, or null when it is not a complete one.</summary>
    public static CheckpointInfo? TryRead(string folder)
    {
        var manifestPath = Path.Combine(folder, ManifestFile);
        if (!File.Exists(manifestPath)) return null;
        try
        {
            var manifest = JsonNode.Parse(File.ReadAllText(manifestPath))?.AsObject();
            if (manifest is null || manifest["complete"]?.GetValue<bool>() != true) return null;
            return new CheckpointInfo(folder, Path.GetFileName(folder), manifest["step"]!.GetValue<long>(), manifest["epoch"]!.GetValue<int>(),
                manifest["metrics"]?["eval_loss"]?.GetValue<double>());
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or NullReferenceException or IOException)
        {
            return null;
        }
    }

    /// <summary>
    /// Cleans what killed runs left in <paramref name="runDir"/>: when <c>name/</c> is missing (a kill between the two
    /// renames), the newest complete <c>name.tmp-*</c> or <c>name.old-*</c> copy (by its manifest's step) becomes
    /// <c>name/</c>; every other temporary or replaced folder is deleted. Returns what was done, for the log.
    /// </summary>
    public static IReadOnlyList<string> Recover(string runDir)
    {
        var actions = new List<string>();
        if (!Directory.Exists(runDir)) return actions;
        var leftovers = Directory.GetDirectories(runDir)
            .Select(d => (Path: d, Name: Path.GetFileName(d)))
            .Select(d => (d.Path, Base: BaseName(d.Name)))
            .Where(d => d.Base is not null)
            .GroupBy(d => d.Base!, StringComparer.Ordinal);
        foreach (var group in leftovers)
        {
            var final = Path.Combine(runDir, group.Key);
            if (!Directory.Exists(final))
            {
                var newest = group.Select(d => TryRead(d.Path)).OfType<CheckpointInfo>()
                    .OrderBy(c => c.Step).ThenBy(c => Directory.GetLastWriteTimeUtc(c.Path)).LastOrDefault();
                if (newest is not null)
                {
                    Directory.Move(newest.Path, final);
                    actions.Add($"completed the interrupted checkpoint write {Path.GetFileName(newest.Path)} → {group.Key}/ (step {newest.Step})");
                }
            }
            foreach (var (path, _) in group.Where(d => Directory.Exists(d.Path)))
            {
                Directory.Delete(path, recursive: true);
                actions.Add($"removed the leftover folder {Path.GetFileName(path)} of an interrupted run");
            }
        }
        return actions;
    }

    static string? BaseName(string folderName)
    {
        foreach (var marker in new[] { ".tmp-", ".old-" })
        {
            int at = folderName.LastIndexOf(marker, StringComparison.Ordinal);
            if (at > 0) return folderName[..at];
        }
        return null;
    }

    /// <summary>Every complete checkpoint in the run dir (temporary and half-replaced folders are skipped).</summary>
    public static IReadOnlyList<CheckpointInfo> List(string runDir)
    {
        if (!Directory.Exists(runDir)) return [];
        return Directory.GetDirectories(runDir)
            .Where(d => !Path.GetFileName(d).Contains(".tmp-", StringComparison.Ordinal) && !Path.GetFileName(d).Contains(".old-", StringComparison.Ordinal))
            .Select(TryRead).OfType<CheckpointInfo>()
            .OrderBy(c => c.Step).ThenBy(c => c.Name, StringComparer.Ordinal).ToList();
    }

    /// <summary>The latest complete checkpoint (highest step; at equal steps the later-written), for <c>resume: auto</c>.</summary>
    public static CheckpointInfo? Latest(string runDir) =>
        List(runDir).OrderBy(c => c.Step).ThenBy(c => Directory.GetLastWriteTimeUtc(Path.Combine(c.Path, ManifestFile))).LastOrDefault();

    /// <summary>The complete checkpoint with the lowest eval loss.</summary>
    public static CheckpointInfo? Best(string runDir) =>
        List(runDir).Where(c => c.EvalLoss is { } l && double.IsFinite(l)).OrderBy(c => c.EvalLoss).FirstOrDefault();
}
