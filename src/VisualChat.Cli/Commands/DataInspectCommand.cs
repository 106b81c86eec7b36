using System.CommandLine;
using System.Text;
using VisualChat.Conversations;
using VisualChat.Data;
using VisualChat.Text;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat data inspect --config FILE [--samples N] [--tokenizer PATH]</c>: counts, skips with examples,
/// image-count and length histograms, and N rendered samples.</summary>
public static class DataInspectCommand
{
    public static Command Create()
    {
        var data = new Command("data", "Inspect and check training data.");
        var config = new Option<FileInfo>("--config") { Description = "Data config (JSON).", Required = true };
        var samples = new Option<int>("--samples") { Description = "How many samples to render as prompt text.", DefaultValueFactory = _ => 3 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer (tokenizer.model, tokenizer.json or a model folder); token lengths and truncation need it (otherwise character lengths are shown)." };
        var decode = new Option<bool>("--decode-images") { Description = "Decode every image (finds undecodable ones before training does).", DefaultValueFactory = _ => true };
        var inspect = new Command("inspect", "Read every configured data set and report counts, skips, histograms and sample prompts; exits 3 when training would stop on this data.");
        inspect.Options.Add(config);
        inspect.Options.Add(samples);
        inspect.Options.Add(tokenizer);
        inspect.Options.Add(decode);
        inspect.SetAction(parse =>
        {
            try
            {
                ITokenizer? tok = null;
                var tokenizerPath = parse.GetValue(tokenizer);
                if (tokenizerPath is not null)
                {
                    var loaded = TokenizerFactory.FromPath(tokenizerPath);
                    loaded.AddSpecialTokens([ConversationTemplate.ImagePlaceholder]);
                    tok = loaded;
                }
                var report = Inspect(parse.GetValue(config)!.FullName, parse.GetValue(samples), tok, parse.GetValue(decode), out bool wouldStop);
                Console.Out.Write(report);
                if (wouldStop) Console.Error.WriteLine("vchat data inspect: more records would be skipped than max_skip_fraction allows: training would stop on this data (see the report).");
                return wouldStop ? 3 : 0;
            }
            catch (Exception e) when (e is DataConfigException or DataSetMissingException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException)
            {
                Console.Error.WriteLine(e.Message);
                return 1;
            }
        });
        data.Subcommands.Add(inspect);
        data.Subcommands.Add(Shapes());
        return data;
    }

    /// <summary><c>vchat data shapes --out DIR</c>: writes the synthetic multi-image shapes conversations as JSONL + PNG.</summary>
    static Command Shapes()
    {
        var output = new Option<string>("--out") { Description = "Folder for train.jsonl, eval.jsonl and images/.", Required = true };
        var train = new Option<int>("--train") { Description = "Training conversations.", DefaultValueFactory = _ => 2000 };
        var eval = new Option<int>("--eval") { Description = "Held-out conversations (generated from indices after the training ones).", DefaultValueFactory = _ => 200 };
        var seed = new Option<int>("--seed") { Description = "Generator seed.", DefaultValueFactory = _ => 1 };
        var size = new Option<int>("--image-size") { Description = "Image width and height in pixels.", DefaultValueFactory = _ => 64 };
        var command = new Command("shapes", "Write the synthetic multi-image, multi-round shapes conversations in the generic JSONL format (with PNG images).")
        {
            output, train, eval, seed, size,
        };
        command.SetAction(parse =>
        {
            string folder = parse.GetValue(output)!;
            int trainCount = parse.GetValue(train), evalCount = parse.GetValue(eval);
            if (trainCount < 0 || evalCount < 0) { Console.Error.WriteLine("--train and --eval must not be negative."); return 2; }
            var generator = new VisualChat.Data.Synthetic.ShapesConversationGenerator(parse.GetValue(seed));
            var trainPath = generator.WriteJsonl(folder, "train.jsonl", 0, trainCount, parse.GetValue(size));
            var evalPath = generator.WriteJsonl(folder, "eval.jsonl", trainCount, evalCount, parse.GetValue(size));
            Console.WriteLine($"wrote {trainPath} ({trainCount} conversations) and {evalPath} ({evalCount}), images under {Path.Combine(folder, "images")}");
            return 0;
        });
        return command;
    }

    /// <summary>The inspection report as text.</summary>
    public static string Inspect(string configPath, int sampleCount, ITokenizer? tokenizer) => Inspect(configPath, sampleCount, tokenizer, false, out _);

    /// <summary>The inspection report as text; <paramref name="decodeImages"/> decodes every image, and
    /// <paramref name="wouldStop"/> tells whether skipped records (and undecodable images) exceed max_skip_fraction.</summary>
    public static string Inspect(string configPath, int sampleCount, ITokenizer? tokenizer, bool decodeImages, out bool wouldStop)
    {
        var config = DataConfig.Load(configPath);
        var mixed = DataMixer.Build(config, Environment.ProcessorCount, enforceSkipLimit: false);
        var template = new ConversationTemplate(new ConversationTemplateOptions { SystemPrompt = config.System ?? ConversationTemplate.DefaultSystemPrompt });
        var output = new StringBuilder();
        output.AppendLine($"Data root: {config.Root}  seed: {config.Seed}  eval_fraction: {config.EvalFraction}");
        IReadOnlyList<int> lengths;
        string lengthUnit;
        IReadOnlyList<Conversation> train = mixed.Train;
        if (tokenizer is not null)
        {
            var encoder = new SampleEncoder(template, tokenizer, config.MaxSeqLen, config.ImageTokens, config.Truncation);
            var prepared = encoder.Prepare(mixed.Train, mixed.Report, Environment.ProcessorCount);
            encoder.Prepare(mixed.Eval, mixed.Report, Environment.ProcessorCount);
            lengths = prepared.Select(p => p.ExpandedLength).ToArray();
            train = prepared.Select(p => p.Conversation).ToArray();
            lengthUnit = $"tokens after image expansion ({config.ImageTokens} per image, max_seq_len {config.MaxSeqLen})";
        }
        else
        {
            lengths = mixed.Train.Select(c => template.RenderText(c).Length).ToArray();
            lengthUnit = "characters of rendered text (no tokenizer given: token lengths and truncation not computed)";
        }
        output.AppendLine();
        output.Append(mixed.Report.Summary());
        int undecodable = 0;
        if (decodeImages)
        {
            var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
            var all = mixed.Train.Concat(mixed.Eval).ToList();
            Parallel.ForEach(all, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, conversation =>
            {
                foreach (var image in conversation.Images)
                {
                    try { VisualChat.Vision.Imaging.ImageLoader.Load(ImageRefs.ReadBytes(image), image.Describe()); }
                    catch (Exception e) when (e is VisualChat.Vision.Imaging.ImageDecodeException or IOException or InvalidDataException or KeyNotFoundException)
                    {
                        failures.Add($"{string.Join("+", conversation.SourceIds)}: {e.Message}");
                        return;
                    }
                }
            });
            undecodable = failures.Count;
            output.AppendLine($"Undecodable images: {undecodable} sample(s) of {all.Count} (training skips them)");
            foreach (var failure in failures.Order(StringComparer.Ordinal).Take(20)) output.AppendLine($"  {failure}");
            if (undecodable > 20) output.AppendLine($"  … and {undecodable - 20} more");
        }
        double fraction = mixed.Report.RecordsRead == 0 ? 0 : (mixed.Report.Skipped + undecodable) / (double)mixed.Report.RecordsRead;
        wouldStop = fraction > config.MaxSkipFraction || mixed.Train.Count == 0;
        output.AppendLine($"Skipped {mixed.Report.Skipped + undecodable} of {mixed.Report.RecordsRead} records ({fraction:P2}{(decodeImages ? ", undecodable images included" : "")}); max_skip_fraction {config.MaxSkipFraction:P2}" +
                          (wouldStop ? " — EXCEEDED: training would stop" : ""));
        output.AppendLine();
        output.AppendLine($"Train samples: {mixed.Train.Count}, eval samples: {mixed.Eval.Count}");
        output.AppendLine("Images per train sample:");
        foreach (var group in mixed.Train.GroupBy(c => c.ImageCount).OrderBy(g => g.Key))
            output.AppendLine($"  {group.Key,3}: {group.Count()}");
        output.AppendLine($"Length of train samples in {lengthUnit}:");
        output.Append(Histogram(lengths));
        for (int i = 0; i < Math.Min(sampleCount, train.Count); i++)
        {
            var sample = train[i];
            output.AppendLine();
            output.AppendLine($"===== sample {i + 1} ({sample.DataSetName}; sources {string.Join(", ", sample.SourceIds.Take(4))}{(sample.SourceIds.Count > 4 ? ", …" : "")}) =====");
            int k = 0;
            foreach (var image in sample.Images) output.AppendLine($"  Image {++k}: {image.Describe()}");
            output.AppendLine("----- text -----");
            output.AppendLine(template.RenderText(sample));
        }
        return output.ToString();
    }

    private static string Histogram(IReadOnlyList<int> values)
    {
        if (values.Count == 0) return "  (none)\n";
        var sb = new StringBuilder();
        int max = values.Max();
        int bucket = 1;
        while (max / bucket > 10) bucket *= 2;
        foreach (var group in values.GroupBy(v => v / bucket).OrderBy(g => g.Key))
            sb.AppendLine($"  {group.Key * bucket,7}–{(group.Key + 1) * bucket - 1,-7}: {group.Count(),6} {new string('#', Math.Max(1, group.Count() * 40 / values.Count))}");
        sb.AppendLine($"  min {values.Min()}, median {values.Order().ElementAt(values.Count / 2)}, max {max}");
        return sb.ToString();
    }
}
