using System.Text.Json;

namespace VisualChat.Data;

public enum TruncationMode { Drop, CutRounds }

/// <summary>One data set entry of the data config.</summary>
public sealed record DataSetConfig
{
    /// <summary>Name in reports and samples; also the format unless <see cref="Format"/> is set.</summary>
    public required string Name { get; init; }
    public required string Format { get; init; }
    /// <summary>jsonl: the .jsonl file; other formats: a data root for this data set only. Relative to the data root.</summary>
    public string? Path { get; init; }
    /// <summary>Total samples to draw (train + eval, after blending); null: use <see cref="Weight"/>.</summary>
    public int? Samples { get; init; }
    /// <summary>Multiplier of the available samples (1 = all once, 0.5 = half, 2 = each twice).</summary>
    public double Weight { get; init; } = 1.0;
    public int MaxImages { get; init; } = 8;
    public int ConcatMin { get; init; } = 1;
    public int ConcatMax { get; init; } = 1;
    public bool AllowTextOnly { get; init; }
}

/// <summary>
/// The data config (JSON, or the same keys as YAML for .yaml/.yml files): <c>{"root", "seed", "max_seq_len", "image_tokens", "truncation": "drop"|"cut_rounds",
/// "eval_fraction", "max_skip_fraction", "system", "datasets": [{"name", "format"?, "path"?, "samples"|"weight",
/// "max_images", "concat": [min, max], "allow_text_only"}]}</c>. Every error names the key.
/// </summary>
public sealed record DataConfig
{
    public required string Root { get; init; }
    public long Seed { get; init; } = 1234;
    public int MaxSeqLen { get; init; } = 4096;
    public int ImageTokens { get; init; } = 256;
    public TruncationMode Truncation { get; init; } = TruncationMode.CutRounds;
    public double EvalFraction { get; init; } = 0.1;
    public double MaxSkipFraction { get; init; } = 0.05;
    /// <summary>System instruction; null: the DeepSpeed-VisualChat default; "": none.</summary>
    public string? System { get; init; }
    public required IReadOnlyList<DataSetConfig> DataSets { get; init; }

    private static readonly string[] TopKeys = ["root", "seed", "max_seq_len", "image_tokens", "truncation", "eval_fraction", "max_skip_fraction", "system", "datasets"];
    private static readonly string[] DataSetKeys = ["name", "format", "path", "samples", "weight", "max_images", "concat", "allow_text_only"];

    /// <summary>Loads and validates a JSON data config; a relative <c>root</c> is relative to the config's folder.</summary>
    public static DataConfig Load(string path)
    {
        if (!File.Exists(path)) throw new DataConfigException($"Data config '{path}' does not exist.");
        var extension = global::System.IO.Path.GetExtension(path).ToLowerInvariant();
        try
        {
            var json = extension is ".yaml" or ".yml" ? YamlToJson(File.ReadAllText(path), path) : File.ReadAllText(path);
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            return Parse(doc.RootElement, global::System.IO.Path.GetDirectoryName(global::System.IO.Path.GetFullPath(path))!, path);
        }
        catch (JsonException e)
        {
            throw new DataConfigException($"{path} is not valid JSON (line {e.LineNumber + 1}): {e.Message}");
        }
    }

    /// <summary>The same keys written as YAML; plain scalars that read as numbers, booleans or null keep that type.</summary>
    public static string YamlToJson(string yaml, string source = "data config")
    {
        var stream = new YamlDotNet.RepresentationModel.YamlStream();
        try
        {
            stream.Load(new StringReader(yaml));
        }
        catch (YamlDotNet.Core.YamlException e)
        {
            throw new DataConfigException($"{source} is not valid YAML (line {e.Start.Line}): {e.Message}");
        }
        if (stream.Documents.Count == 0) throw new DataConfigException($"{source} is empty.");
        return Convert(stream.Documents[0].RootNode)?.ToJsonString() ?? "null";
    }

    private static global::System.Text.Json.Nodes.JsonNode? Convert(YamlDotNet.RepresentationModel.YamlNode node)
    {
        switch (node)
        {
            case YamlDotNet.RepresentationModel.YamlMappingNode map:
                var obj = new global::System.Text.Json.Nodes.JsonObject();
                foreach (var (key, value) in map.Children)
                    obj[((YamlDotNet.RepresentationModel.YamlScalarNode)key).Value ?? ""] = Convert(value);
                return obj;
            case YamlDotNet.RepresentationModel.YamlSequenceNode list:
                var array = new global::System.Text.Json.Nodes.JsonArray();
                foreach (var item in list.Children) array.Add(Convert(item));
                return array;
            case YamlDotNet.RepresentationModel.YamlScalarNode scalar:
                var text = scalar.Value ?? "";
                if (scalar.Style != YamlDotNet.Core.ScalarStyle.Plain) return global::System.Text.Json.Nodes.JsonValue.Create(text);
                if (text is "" or "~" or "null" or "Null" or "NULL") return null;
                if (text is "true" or "True" or "TRUE") return global::System.Text.Json.Nodes.JsonValue.Create(true);
                if (text is "false" or "False" or "FALSE") return global::System.Text.Json.Nodes.JsonValue.Create(false);
                if (long.TryParse(text, global::System.Globalization.NumberStyles.AllowLeadingSign, global::System.Globalization.CultureInfo.InvariantCulture, out var l))
                    return global::System.Text.Json.Nodes.JsonValue.Create(l);
                if (double.TryParse(text, global::System.Globalization.NumberStyles.Float, global::System.Globalization.CultureInfo.InvariantCulture, out var d))
                    return global::System.Text.Json.Nodes.JsonValue.Create(d);
                return global::System.Text.Json.Nodes.JsonValue.Create(text);
            default:
                return null;
        }
    }

    public static DataConfig Parse(JsonElement root, string baseFolder, string source = "data config")
    {
        if (root.ValueKind != JsonValueKind.Object) throw new DataConfigException($"{source}: expected a JSON object at the top level.");
        foreach (var p in root.EnumerateObject())
        {
            if (!TopKeys.Contains(p.Name))
                throw new DataConfigException($"{source}: unknown key '{p.Name}'. Known keys: {string.Join(", ", TopKeys)}.");
        }

        var rootDir = String(root, "root", source) ?? throw new DataConfigException($"{source}: 'root' (the data root folder) is required.");
        var config = new DataConfig
        {
            Root = global::System.IO.Path.GetFullPath(global::System.IO.Path.Combine(baseFolder, rootDir)),
            Seed = Long(root, "seed", source) ?? 1234,
            MaxSeqLen = Int(root, "max_seq_len", source, min: 8) ?? 4096,
            ImageTokens = Int(root, "image_tokens", source, min: 1) ?? 256,
            Truncation = String(root, "truncation", source) switch
            {
                null or "cut_rounds" => TruncationMode.CutRounds,
                "drop" => TruncationMode.Drop,
                var other => throw new DataConfigException($"{source}: 'truncation' is '{other}'; use \"drop\" or \"cut_rounds\"."),
            },
            EvalFraction = Fraction(root, "eval_fraction", source) ?? 0.1,
            MaxSkipFraction = Fraction(root, "max_skip_fraction", source) ?? 0.05,
            System = String(root, "system", source),
            DataSets = [],
        };
        if (!root.TryGetProperty("datasets", out var list) || list.ValueKind != JsonValueKind.Array || list.GetArrayLength() == 0)
            throw new DataConfigException($"{source}: 'datasets' must be a non-empty array of data set entries.");
        var dataSets = new List<DataSetConfig>();
        int i = 0;
        foreach (var entry in list.EnumerateArray())
        {
            var at = $"{source}: datasets[{i++}]";
            if (entry.ValueKind != JsonValueKind.Object) throw new DataConfigException($"{at} must be an object.");
            foreach (var p in entry.EnumerateObject())
            {
                if (!DataSetKeys.Contains(p.Name))
                    throw new DataConfigException($"{at}: unknown key '{p.Name}'. Known keys: {string.Join(", ", DataSetKeys)}.");
            }

            var name = String(entry, "name", at) ?? throw new DataConfigException($"{at}.name is required.");
            var format = String(entry, "format", at) ?? name;
            if (!DataSetCatalog.Exists(format))
                throw new DataConfigException($"{at}.{(entry.TryGetProperty("format", out _) ? "format" : "name")}: unknown data set '{format}'. Known: {string.Join(", ", DataSetCatalog.Names)}.");
            if (entry.TryGetProperty("samples", out _) && entry.TryGetProperty("weight", out _))
                throw new DataConfigException($"{at}: give either 'samples' or 'weight', not both.");
            var (defaultMin, defaultMax) = DataSetCatalog.Create(format).DefaultConcat;
            int concatMin = defaultMin, concatMax = defaultMax;
            if (entry.TryGetProperty("concat", out var concat))
            {
                if (concat.ValueKind != JsonValueKind.Array || concat.GetArrayLength() != 2 ||
                    !concat[0].TryGetInt32(out concatMin) || !concat[1].TryGetInt32(out concatMax) || concatMin < 1 || concatMax < concatMin)
                {
                    throw new DataConfigException($"{at}.concat must be [min, max] with 1 <= min <= max, e.g. [1, 3].");
                }
            }
            if (format == DataSetCatalog.JsonlFormat && String(entry, "path", at) is null)
                throw new DataConfigException($"{at}.path is required for the jsonl format (the .jsonl file).");
            if (dataSets.Any(d => d.Name == name))
                throw new DataConfigException($"{at}.name '{name}' is used twice; give each data set entry its own name.");
            dataSets.Add(new DataSetConfig
            {
                Name = name,
                Format = format,
                Path = String(entry, "path", at),
                Samples = Int(entry, "samples", at, min: 0),
                Weight = Double(entry, "weight", at, min: 0) ?? 1.0,
                MaxImages = Int(entry, "max_images", at, min: 1) ?? 8,
                ConcatMin = concatMin,
                ConcatMax = concatMax,
                AllowTextOnly = Bool(entry, "allow_text_only", at) ?? false,
            });
        }
        return config with { DataSets = dataSets };
    }

    private static string? String(JsonElement e, string key, string at) =>
        !e.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString()
        : throw new DataConfigException($"{at}.{key} must be a string, found {v.ValueKind}.");

    private static long? Long(JsonElement e, string key, string at) =>
        !e.TryGetProperty(key, out var v) ? null
        : v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var n) ? n
        : throw new DataConfigException($"{at}.{key} must be an integer, found {v.GetRawText()}.");

    private static int? Int(JsonElement e, string key, string at, int min)
    {
        if (!e.TryGetProperty(key, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var n))
            throw new DataConfigException($"{at}.{key} must be an integer, found {v.GetRawText()}.");
        if (n < min) throw new DataConfigException($"{at}.{key} is {n}; it must be at least {min}.");
        return n;
    }

    private static double? Double(JsonElement e, string key, string at, double min)
    {
        if (!e.TryGetProperty(key, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Number) throw new DataConfigException($"{at}.{key} must be a number, found {v.GetRawText()}.");
        var d = v.GetDouble();
        if (d < min) throw new DataConfigException($"{at}.{key} is {d}; it must be at least {min}.");
        return d;
    }

    private static double? Fraction(JsonElement e, string key, string at)
    {
        var d = Double(e, key, at, 0);
        if (d is >= 1) throw new DataConfigException($"{at}.{key} is {d}; it must be in [0, 1).");
        return d;
    }

    private static bool? Bool(JsonElement e, string key, string at) =>
        !e.TryGetProperty(key, out var v) ? null
        : v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean()
        : throw new DataConfigException($"{at}.{key} must be true or false, found {v.GetRawText()}.");
}
