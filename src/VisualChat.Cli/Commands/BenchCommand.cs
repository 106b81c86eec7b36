using System.CommandLine;
using VisualChat.Benchmarks;

namespace VisualChat.Cli.Commands;

/// <summary><c>vchat bench …</c>: measurements that print a table and a ratio to a baseline measured in the same run.</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var bench = new Command("bench", "Benchmarks; each reports ratios against a baseline measured in the same run.");
        bench.Subcommands.Add(Attention());
        bench.Subcommands.Add(BenchPreprocessCommand.Create());
        bench.Subcommands.Add(BenchVisionCommand.Create());
        bench.Subcommands.Add(BenchAblationCommand.Create());
        bench.Subcommands.Add(Decode());
        bench.Subcommands.Add(BenchServeCommand.Create());
        bench.Subcommands.Add(TrainCommand.CreateBench());
        bench.Subcommands.Add(BenchDistributedCommand.Create());
        return bench;
    }

    static Command Attention()
    {
        var lengths = new Option<long[]>("--lengths") { Description = "Sequence lengths.", DefaultValueFactory = _ => [1024, 2048, 4096], AllowMultipleArgumentsPerToken = true };
        var images = new Option<int>("--images") { Description = "Images per sequence.", DefaultValueFactory = _ => 4 };
        var imageTokens = new Option<int>("--image-tokens") { Description = "Tokens per image.", DefaultValueFactory = _ => 256 };
        var heads = new Option<int>("--heads") { Description = "Attention heads.", DefaultValueFactory = _ => 16 };
        var headDim = new Option<int>("--head-dim") { Description = "Head width.", DefaultValueFactory = _ => 64 };
        var repeats = new Option<int>("--repeats") { Description = "Timed repetitions (best is reported) after one warm-up.", DefaultValueFactory = _ => 3 };
        var noDense = new Option<bool>("--no-dense") { Description = "Skip the dense MMCA reference (it needs several L² buffers)." };
        var command = new Command("attention", "Forward+backward time and peak memory of MMCA vs causal attention (and the dense MMCA reference).")
        {
            lengths, images, imageTokens, heads, headDim, repeats, noDense,
        };
        command.SetAction(parse =>
        {
            Console.WriteLine($"machine: {MachineInfo.Current()}");
            Console.WriteLine($"batch 1, {parse.GetValue(heads)} heads × {parse.GetValue(headDim)}, fp32, {parse.GetValue(images)} images × {parse.GetValue(imageTokens)} tokens spread through the text (at most half of a sequence is image tokens)");
            Console.WriteLine($"{"kernel",-12} {"L",6} {"images",7} {"fwd+bwd ms",11} {"× causal",9} {"peak extra MiB",15}");
            foreach (var row in AttentionBenchmark.Run(parse.GetValue(lengths)!, parse.GetValue(images), parse.GetValue(imageTokens),
                         parse.GetValue(heads), parse.GetValue(headDim), parse.GetValue(repeats), !parse.GetValue(noDense)))
            {
                Console.WriteLine($"{row.Kernel,-12} {row.SequenceLength,6} {row.Images,7} {row.ForwardBackwardMs,11:F1} {row.RatioToCausal,9:F2} {row.PeakExtraMiB,15:F1}");
            }

            return 0;
        });
        return command;
    }

    static Command Decode()
    {
        var preset = new Option<string>("--preset") { Description = "Language-model preset to build in memory (random init).", DefaultValueFactory = _ => "llama-100m" };
        var tokens = new Option<int>("--tokens") { Description = "Tokens to decode per sequence after the prefill.", DefaultValueFactory = _ => 64 };
        var prompt = new Option<int>("--prompt-tokens") { Description = "Prefill length.", DefaultValueFactory = _ => 16 };
        var formats = new Option<string>("--formats") { Description = "Comma-separated weight formats for the fused kernels: fp32, bf16, q8, q4.", DefaultValueFactory = _ => "fp32,bf16,q8,q4" };
        var batches = new Option<string>("--batches") { Description = "Comma-separated batch sizes (sequences decoded together).", DefaultValueFactory = _ => "1,8" };
        var peer = new Option<string?>("--peer-cmd") { Description = "A peer decoder's command line that prints 'achieved tok/s: X' (e.g. llama2.c's run); run alternately with ours." };
        var llama2c = new Option<string?>("--peer-llama2c") { Description = "llama2.c's compiled run (with its tokenizer.bin beside it): the preset's weights are written in llama2.c's format and run as the peer (OMP threads = ours)." };
        var rounds = new Option<int>("--peer-rounds") { Description = "Alternating rounds of the peer and our fp32 batch-1 decode.", DefaultValueFactory = _ => 3 };
        var repeats = new Option<int>("--repeats") { Description = "Timed runs per row (the fastest is reported, against the highest bandwidth reading of the row).", DefaultValueFactory = _ => 3 };
        var prefill = new Option<int>("--prefill-tokens") { Description = "Prompt length of the prefill measurement (libtorch GEMMs, against the GEMM peak); 0 skips it.", DefaultValueFactory = _ => 128 };
        var command = new Command("decode", "Decode tokens/s per weight format and batch size vs the streaming-read bound measured in the same run")
            { preset, tokens, prompt, formats, batches, peer, llama2c, rounds, repeats, prefill };
        command.SetAction(parse =>
        {
            var stdout = parse.InvocationConfiguration.Output;
            if (VisualChat.Model.Presets.ModelPresetCatalog.Get(parse.GetValue(preset)!) is not VisualChat.Model.Presets.LanguageModelPreset lm)
            {
                parse.InvocationConfiguration.Error.WriteLine($"vchat bench decode: preset '{parse.GetValue(preset)}' is not a language model.");
                return 1;
            }
            var config = lm.Config();
            var formatList = parse.GetValue(formats)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var batchTexts = parse.GetValue(batches)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (batchTexts.Length == 0 || batchTexts.Any(t => !int.TryParse(t, out int b) || b < 1))
            {
                parse.InvocationConfiguration.Error.WriteLine($"vchat bench decode: --batches '{parse.GetValue(batches)}' must be comma-separated positive integers, e.g. 1,8.");
                return 1;
            }
            var batchList = batchTexts.Select(int.Parse).ToArray();
            string? peerCommand = parse.GetValue(peer);
            string? llama2cRun = parse.GetValue(llama2c), llama2cTokenizer = null;
            if (llama2cRun is not null)
            {
                llama2cTokenizer = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(llama2cRun)) ?? ".", "tokenizer.bin");
                string? problem = !File.Exists(llama2cRun) || !File.Exists(llama2cTokenizer)
                    ? $"must be llama2.c's compiled run with its tokenizer.bin beside it ({llama2cTokenizer}); build it with gcc -Ofast -fopenmp -march=native run.c -lm -o run"
                    : config.VocabSize != Llama2cCheckpoint.TokenizerVocabulary
                        ? $"needs a preset with llama2.c's {Llama2cCheckpoint.TokenizerVocabulary}-id vocabulary (its tokenizer.bin); '{lm.Name}' has {config.VocabSize}"
                        : peerCommand is not null ? "and --peer-cmd are two peers; give one" : null;
                if (problem is not null)
                {
                    parse.InvocationConfiguration.Error.WriteLine($"vchat bench decode: --peer-llama2c '{llama2cRun}' {problem}.");
                    return 1;
                }
            }
            if ((peerCommand is not null || llama2cRun is not null) && parse.GetValue(rounds) < 1)
            {
                parse.InvocationConfiguration.Error.WriteLine($"vchat bench decode: --peer-rounds must be at least 1 (got {parse.GetValue(rounds)}).");
                return 1;
            }
            stdout.WriteLine($"machine: {MachineInfo.Current()}");
            var bandwidth = Roofline.StreamingReadProbe(out var probeBuffer);
            using var _ = probeBuffer;
            double gemm = Roofline.GemmThroughput();
            stdout.WriteLine($"streaming-read bandwidth (1 GiB, {Roofline.DecodeThreads} threads): {bandwidth() / 1e9:F1} GB/s now, read again before every timed run; fp32 GEMM (libtorch, 1024³): {gemm / 1e9:F1} GFLOP/s");
            stdout.WriteLine($"model: {lm.Name}, {config.ParameterCount():N0} parameters; greedy, KV cache, prompt {parse.GetValue(prompt)} tokens, {parse.GetValue(tokens)} new tokens per sequence");
            stdout.WriteLine($"each row: the fastest of {parse.GetValue(repeats)} timed runs; its read bound from the highest of the bandwidth readings taken before each run");
            stdout.WriteLine($"{"variant",-36} {"batch",5} {"tokens/s",9} {"vs base",8} {"MB/step",8} {"bound tok/s",16} {"achieved/bound",15} {"matrices ms",12} {"attention ms",13} {"other ms",9}");
            double baseline = 0, fusedFp32 = 0;
            var rows = DecodeBenchmark.Run(config, formatList, batchList, bandwidth, parse.GetValue(tokens), parse.GetValue(prompt), repeats: parse.GetValue(repeats), flops: gemm);
            foreach (var row in rows)
            {
                if (baseline == 0) baseline = row.TokensPerSecond;
                if (row.Variant == "fused, fp32" && row.Batch == 1) fusedFp32 = row.TokensPerSecond;
                stdout.WriteLine($"{row.Variant,-36} {row.Batch,5} {row.TokensPerSecond,9:F1} {row.TokensPerSecond / baseline,7:F2}× {row.WeightBytesPerStep / 1e6,8:F1} {row.BoundTokensPerSecond,10:F1} {(row.ComputeBound ? "flops" : "read"),5} {row.RatioToBound,15:P1} " +
                    $"{Show(row.MatrixMs),12} {Show(row.AttentionMs),13} {Show(row.OtherMs),9}");
            }
            if (parse.GetValue(prefill) is > 0 and var prefillTokens)
            {
                var result = DecodeBenchmark.Prefill(config, prefillTokens, gemm, repeats: parse.GetValue(repeats));
                stdout.WriteLine($"prefill (libtorch fp32, {result.Tokens}-token prompt, batch 1): {result.TokensPerSecond:F1} tokens/s = {result.FlopsPerSecond / 1e9:F1} GFLOP/s of matrix products = {result.ShareOfGemmPeak:P1} of the GEMM peak above");
            }
            int[] quantizedBits = [.. new[] { 8, 4 }.Where(b => formatList.Contains($"q{b}"))];
            foreach (var agreement in quantizedBits.Length == 0 ? [] : DecodeBenchmark.Agreements(config, quantizedBits))
            {
                stdout.WriteLine($"{agreement.Format} vs fp32 over {agreement.Positions} teacher-forced positions: greedy token agrees at {agreement.TopOneAgreement:P1}; logit RMS error {agreement.RelativeLogitRmsError:P2} of the logits' RMS");
            }
            if (peerCommand is not null || llama2cRun is not null)
            {
                string? checkpoint = null;
                // Ctrl-C ends the process without running finally: the checkpoint (the model's size) goes first.
                ConsoleCancelEventHandler cleanup = (_, _) => { if (checkpoint is not null) File.Delete(checkpoint); };
                Console.CancelKeyPress += cleanup;
                try
                {
                    if (llama2cRun is not null)
                    {
                        // The same weights ours decode (DecodeBenchmark's seed 0), in llama2.c's layout; a prompt of
                        // about the same length, every step one token as ours.
                        checkpoint = Path.Combine(Path.GetTempPath(), $"vchat-llama2c-{Environment.ProcessId}.bin");
                        using (var model = new VisualChat.Model.LlamaForCausalLM(config, 0))
                            Llama2cCheckpoint.Write(model, checkpoint, parse.GetValue(prompt) + parse.GetValue(tokens) + 8);
                        peerCommand = $"OMP_NUM_THREADS={Roofline.DecodeThreads} '{Path.GetFullPath(llama2cRun)}' '{checkpoint}' -z '{llama2cTokenizer}' -t 0 " +
                            $"-n {parse.GetValue(prompt) + parse.GetValue(tokens)} -i 'Once upon a time, there was a little girl who loved to play outside'";
                    }
                    var ours = new List<double>();
                    var theirs = new List<double>();
                    for (int round = 0; round < parse.GetValue(rounds); round++)
                    {
                        theirs.Add(DecodeBenchmark.RunPeer(peerCommand!));
                        ours.Add(DecodeBenchmark.Run(config, ["fp32"], [1], bandwidth, parse.GetValue(tokens), parse.GetValue(prompt), repeats: 1).Last().TokensPerSecond);
                    }
                    stdout.WriteLine($"peer: {peerCommand}");
                    stdout.WriteLine($"  peer tok/s per round: {string.Join(", ", theirs.Select(t => t.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))}; " +
                        $"ours (fused fp32, batch 1): {string.Join(", ", ours.Select(t => t.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))}");
                    stdout.WriteLine($"  ours / peer (median): {Median(ours) / Median(theirs):F2}×");
                }
                finally
                {
                    Console.CancelKeyPress -= cleanup;
                    if (checkpoint is not null) File.Delete(checkpoint);
                }
            }
            else if (fusedFp32 > 0)
            {
                stdout.WriteLine($"fused fp32 batch 1 = {fusedFp32 / baseline:F2}× the libtorch forward");
            }
            return 0;
        });
        return command;
    }

    static string Show(double? ms) => ms is { } v ? v.ToString("F2", System.Globalization.CultureInfo.InvariantCulture) : "-";

    static double Median(List<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
