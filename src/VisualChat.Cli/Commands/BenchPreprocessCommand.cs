using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;

namespace VisualChat.Cli.Commands;

/// <summary>
/// <c>vchat bench preprocess</c>: images/s for decode alone (the baseline) and for decode + CLIP preprocessing
/// at 224 (CLIP ViT-L/14) and 448 (Qwen-VL), one image at a time and as a parallel batch. Files are read into
/// memory first so disk speed does not count.
/// </summary>
public static class BenchPreprocessCommand
{
    private static readonly string[] DefaultImageDirCandidates = [Path.Combine("..", "shared", "data", "dsvc-eval"), Path.Combine("shared", "data", "dsvc-eval")];

    public static Command Create()
    {
        var imagesDir = new Option<string?>("--images") { Description = "Folder searched recursively for images (default: ../shared/data/dsvc-eval next to the repository or the current directory)." };
        var size = new Option<int?>("--size") { Description = "Only this preprocessing size: 224 (CLIP) or 448 (Qwen-VL). Default: both." };
        var repeat = new Option<int>("--repeat") { Description = "Passes over the image set per measurement (after one warm-up pass).", DefaultValueFactory = _ => 3 };
        var command = new Command("preprocess", "Decode + CLIP preprocessing throughput (images/s) against decode alone.") { imagesDir, size, repeat };
        command.SetAction(parse =>
        {
            var sizes = parse.GetValue(size) is int only ? [only] : new[] { 224, 448 };
            if (sizes.Any(s => s is not (224 or 448)))
            {
                Console.Error.WriteLine($"--size must be 224 or 448, got {string.Join(",", sizes)}.");
                return 2;
            }
            int repeats = parse.GetValue(repeat);
            if (repeats < 1)
            {
                Console.Error.WriteLine($"--repeat must be at least 1, got {repeats}.");
                return 2;
            }
            string? dir = parse.GetValue(imagesDir) ?? FindDefaultImageDir();
            if (dir is null || !Directory.Exists(dir))
            {
                Console.Error.WriteLine(dir is null
                    ? $"No image folder given and none of {string.Join(", ", DefaultImageDirCandidates)} exists next to the repository or under {Environment.CurrentDirectory}; pass --images DIR."
                    : $"Image folder '{Path.GetFullPath(dir)}' does not exist; pass --images DIR.");
                return 2;
            }
            return Run(dir, sizes, repeats);
        });
        return command;
    }

    private static int Run(string dir, int[] sizes, int repeats)
    {
        var files = Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
            .Where(f => { var ext = Path.GetExtension(f).ToLowerInvariant(); return ext is ".jpg" or ".jpeg" or ".png" or ".gif" or ".bmp"; })
            .OrderBy(f => f, StringComparer.Ordinal).ToList();
        if (files.Count == 0)
        {
            Console.Error.WriteLine($"No .jpg/.jpeg/.png/.gif/.bmp files under '{Path.GetFullPath(dir)}'.");
            return 2;
        }
        var encoded = files.Select(f => (Path: f, Bytes: File.ReadAllBytes(f))).ToList();
        long pixels = encoded.Sum(e => { ImageHeader.TryRead(e.Bytes, out var h); return (long)h.Width * h.Height; });
        Console.WriteLine($"machine: {Environment.ProcessorCount} logical cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture}, .NET {Environment.Version}, CPU {CpuModel()}");
        Console.WriteLine($"images: {encoded.Count} files under {Path.GetFullPath(dir)}, {encoded.Sum(e => e.Bytes.LongLength) / 1e6:F1} MB encoded, {pixels / 1e6:F1} Mpixel; {repeats} timed pass(es) after one warm-up");

        RgbImage Decode((string Path, byte[] Bytes) e) => ImageLoader.Load(e.Bytes, e.Path);

        var rows = new List<(string Name, double ImagesPerSecond)>();
        double decodeSerial = Measure(encoded.Count, repeats, () => { foreach (var e in encoded) Decode(e); });
        rows.Add(("decode, 1 thread (baseline)", decodeSerial));
        rows.Add(("decode, parallel", Measure(encoded.Count, repeats, () => Parallel.ForEach(encoded, e => Decode(e)))));
        foreach (int size in sizes)
        {
            var processor = new ClipImageProcessor(size == 224 ? ImageProcessorConfig.Clip224 : ImageProcessorConfig.QwenVL448);
            string label = size == 224 ? "CLIP 224" : "Qwen-VL 448";
            rows.Add(($"decode + {label}, 1 image at a time", Measure(encoded.Count, repeats, () =>
            {
                foreach (var e in encoded)
                {
                    using var t = processor.Preprocess(Decode(e));
                }
            })));
            rows.Add(($"decode + {label}, parallel batch", Measure(encoded.Count, repeats, () =>
            {
                var images = new RgbImage[encoded.Count];
                Parallel.For(0, encoded.Count, i => images[i] = Decode(encoded[i]));
                using var batch = processor.Preprocess(images);
            })));
        }
        Console.WriteLine($"{"pipeline",-42} {"images/s",9} {"x decode",9}");
        foreach (var (name, rate) in rows)
            Console.WriteLine($"{name,-42} {rate,9:F2} {rate / decodeSerial,9:F2}");
        return 0;
    }

    /// <summary>Best of <paramref name="repeats"/> timed passes after one warm-up pass, in images per second.</summary>
    private static double Measure(int imagesPerPass, int repeats, Action pass)
    {
        pass();
        double best = double.MaxValue;
        for (int r = 0; r < repeats; r++)
        {
            var watch = Stopwatch.StartNew();
            pass();
            best = Math.Min(best, watch.Elapsed.TotalSeconds);
        }
        return imagesPerPass / best;
    }

    private static string? FindDefaultImageDir()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                bool isRepoRoot = File.Exists(Path.Combine(dir.FullName, "VisualChat.sln"));
                if (!isRepoRoot && dir.FullName != Environment.CurrentDirectory) continue;
                foreach (var candidate in DefaultImageDirCandidates)
                {
                    var path = Path.GetFullPath(Path.Combine(dir.FullName, candidate));
                    if (Directory.Exists(path)) return path;
                }
            }
        }
        return null;
    }

    private static string CpuModel()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            return line is null ? "unknown" : line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { return "unknown"; }
        catch (UnauthorizedAccessException) { return "unknown"; }
    }
}
