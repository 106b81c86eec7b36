using System.Text;
using TorchSharp;

namespace VisualChat.Weights;

/// <summary>How <see cref="StateDict.Load"/> matches module tensors to checkpoint tensors.</summary>
public sealed record LoadOptions
{
    /// <summary>When true, any module tensor missing from the checkpoint or checkpoint tensor left unused throws.</summary>
    public bool Strict { get; init; } = true;

    /// <summary>Maps a module state-dict name to the checkpoint name; returning null skips that module tensor
    /// (it is neither loaded nor reported missing). Null: names are used as they are.</summary>
    public Func<string, string?>? MapName { get; init; }

    /// <summary>Checkpoint tensor names that may stay unused without being reported unexpected.</summary>
    public IReadOnlySet<string>? IgnoreUnexpected { get; init; }

    /// <summary>Checkpoint tensors for which this returns true may stay unused (e.g. a prefix of another sub-model).</summary>
    public Func<string, bool>? IgnoreUnexpectedWhere { get; init; }

    /// <summary>When true, a CPU module tensor whose dtype equals the stored one takes the checkpoint's storage through a
    /// private memory mapping (<see cref="ITensorSource.TryMap"/>) instead of a copy: loading reads nothing up front and
    /// the weights occupy the page cache once. Others are copied as usual.</summary>
    public bool MemoryMap { get; init; }
}

/// <summary>What a load did: module tensors loaded and missing, and checkpoint tensors nothing used (checkpoint names).</summary>
public sealed record LoadReport(IReadOnlyList<string> Loaded, IReadOnlyList<string> Missing, IReadOnlyList<string> Unexpected)
{
    /// <summary>Loaded tensors holding NaN or Inf (reported through <see cref="StateDict.Warn"/>).</summary>
    public IReadOnlyList<string> NonFinite { get; init; } = [];
}

/// <summary>Loads and saves the parameters and persistent buffers of a module (the names of <c>module.state_dict()</c>).</summary>
public static class StateDict
{
    /// <summary>
    /// Copies each parameter and persistent buffer of <paramref name="module"/> from <paramref name="source"/>, one tensor
    /// at a time, converting to the parameter's dtype and device. Everything is checked before anything is copied: in
    /// strict mode missing or unexpected tensors throw <see cref="InvalidDataException"/>; a shape mismatch always throws
    /// (as in PyTorch), naming the tensor, its file and both shapes.
    /// </summary>
    public static LoadReport Load(torch.nn.Module module, ITensorSource source, LoadOptions? options = null)
    {
        options ??= new LoadOptions();
        var targets = module.state_dict();
        var plan = new List<(string ModuleName, string CheckpointName, torch.Tensor Target)>();
        var missing = new List<string>();
        var mismatches = new List<string>();
        var used = new HashSet<string>(StringComparer.Ordinal);
        var nonFinite = new List<string>();
        foreach (var (moduleName, target) in targets)
        {
            string? checkpointName = options.MapName is null ? moduleName : options.MapName(moduleName);
            if (checkpointName is null)
            {
                continue;
            }
            if (!source.Contains(checkpointName))
            {
                missing.Add(moduleName == checkpointName ? moduleName : $"{moduleName} (checkpoint name '{checkpointName}')");
                continue;
            }
            used.Add(checkpointName);
            var entry = source.Describe(checkpointName);
            if (!entry.Shape.SequenceEqual(target.shape))
            {
                mismatches.Add($"'{checkpointName}' in '{entry.File}': module '{moduleName}' expects {DTypes.FormatShape(target.shape)}, the checkpoint has {DTypes.FormatShape(entry.Shape)}");
                continue;
            }
            // Integer values cast into a float weight are almost surely a mislabelled or foreign file, not weights.
            if (torch.is_floating_point(target) && !IsFloating(entry.DType))
            {
                mismatches.Add($"'{checkpointName}' in '{entry.File}': module '{moduleName}' is {target.dtype}, the checkpoint stores {entry.DType} (integers are not cast into float weights)");
                continue;
            }
            plan.Add((moduleName, checkpointName, target));
        }
        var unexpected = source.Entries
            .Select(e => e.Name)
            .Where(name => !used.Contains(name)
                && !(options.IgnoreUnexpected?.Contains(name) ?? false)
                && !(options.IgnoreUnexpectedWhere?.Invoke(name) ?? false))
            .ToList();

        if (mismatches.Count > 0 || (options.Strict && (missing.Count > 0 || unexpected.Count > 0)))
        {
            throw new InvalidDataException(DescribeMismatch(module, source, missing, unexpected, mismatches, options.Strict));
        }

        using (torch.no_grad())
        {
            foreach (var (_, checkpointName, target) in plan)
            {
                // Read in the stored type on the CPU; copy_ converts straight into the parameter, so at most one
                // tensor-sized temporary exists at a time.
                if (options.MemoryMap && target.device_type == DeviceType.CPU && source.Describe(checkpointName).DType == target.dtype
                    && source.TryMap(checkpointName) is { } mapped)
                {
                    using (mapped)
                    {
                        // No NaN/Inf scan here: it would read every page, which mapping exists to avoid.
                        target.set_(mapped);
                    }
                    continue;
                }
                using var loaded = source.Read(checkpointName);
                target.copy_(loaded);
                if (torch.is_floating_point(loaded) && !AllFinite(loaded))
                    nonFinite.Add(checkpointName);
            }
        }
        if (nonFinite.Count > 0)
        {
            Warn?.Invoke($"warning: {nonFinite.Count} tensor(s) of {DescribeFiles(source)} hold NaN or Inf values ({string.Join(", ", nonFinite.Take(5))}{(nonFinite.Count > 5 ? ", …" : "")}); " +
                "outputs computed from them will be NaN. The weights are probably from a diverged run.");
        }

        return new LoadReport(plan.Select(p => p.ModuleName).ToList(), missing, unexpected) { NonFinite = nonFinite };
    }

    static bool AllFinite(torch.Tensor tensor)
    {
        using var finite = tensor.isfinite();
        using var all = finite.all();
        return all.item<bool>();
    }

    /// <summary>Where load warnings (NaN/Inf weights) go; standard error unless a host redirects or silences them.</summary>
    public static Action<string>? Warn { get; set; } = message => Console.Error.WriteLine(message);

    static string DescribeFiles(ITensorSource source)
    {
        var files = source.Entries.Select(e => e.File).Distinct().ToList();
        return files.Count == 1 ? $"'{files[0]}'" : $"'{files.FirstOrDefault()}' and {Math.Max(0, files.Count - 1)} other file(s)";
    }

    private static string DescribeMismatch(torch.nn.Module module, ITensorSource source, List<string> missing, List<string> unexpected,
        List<string> mismatches, bool strict)
    {
        var files = source.Entries.Select(e => e.File).Distinct().ToList();
        string where = files.Count switch
        {
            0 => "an empty checkpoint",
            1 => $"'{files[0]}'",
            _ => $"'{files[0]}' and {files.Count - 1} other file(s)",
        };
        var message = new StringBuilder($"Checkpoint {where} does not match module {module.GetName()}:");
        const int shown = 20;
        void List(string title, List<string> names)
        {
            if (names.Count == 0)
            {
                return;
            }
            message.Append($" {title} ({names.Count}): {string.Join("; ", names.Take(shown))}");
            message.Append(names.Count > shown ? $"; … and {names.Count - shown} more." : ".");
        }
        List("shape mismatch", mismatches);
        if (strict)
        {
            List("missing from the checkpoint", missing);
            List("unexpected in the checkpoint", unexpected);
            message.Append(" Map names with LoadOptions.MapName, ignore extra tensors with LoadOptions.IgnoreUnexpected, or load with Strict = false.");
        }
        return message.ToString();
    }

    /// <summary>
    /// Saves the module's state dict, converted to <paramref name="dtype"/> when given: to one file when
    /// <paramref name="pathOrFolder"/> ends with <c>.safetensors</c>, otherwise into that folder as
    /// <c>model.safetensors</c> or shards of at most <paramref name="maxShardBytes"/> with an index (the limit applies
    /// to folders only). Integer buffers keep their type; metadata is <c>{"format": "pt"}</c> as transformers writes.
    /// </summary>
    public static void Save(torch.nn.Module module, string pathOrFolder, torch.ScalarType? dtype = null, long maxShardBytes = long.MaxValue)
    {
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        var tensors = module.state_dict()
            .Select(pair => new TensorToWrite(pair.Key, pair.Value, IsFloating(pair.Value.dtype) ? dtype ?? pair.Value.dtype : pair.Value.dtype))
            .ToList();
        if (pathOrFolder.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            string? folder = Path.GetDirectoryName(Path.GetFullPath(pathOrFolder));
            if (folder is not null)
            {
                Directory.CreateDirectory(folder);
            }
            SafetensorsWriter.Write(pathOrFolder, tensors, metadata);
            return;
        }
        TensorFiles.SaveSharded(pathOrFolder, tensors, maxShardBytes, "model", metadata);
    }

    private static bool IsFloating(torch.ScalarType type) =>
        type is torch.ScalarType.Float32 or torch.ScalarType.Float16 or torch.ScalarType.BFloat16 or torch.ScalarType.Float64;
}
