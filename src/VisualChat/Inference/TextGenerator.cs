// The class is TextGenerator, not Generator, so it never collides with torch.Generator under `using static TorchSharp.torch`.
using TorchSharp;
using VisualChat.Attention;
using VisualChat.Model;
using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Inference;

/// <summary>
/// Autoregressive decoding: one prefill pass over the (left-padded) prompts, then one token per step through the KV cache.
/// Runs under no_grad with a dispose scope per step; only the sampled ids cross from one step to the next, as plain ints.
/// </summary>
public static class TextGenerator
{
    public static GenerationResult Generate(ICausalLM model, IReadOnlyList<int> promptIds, GenerationOptions options,
        Func<IReadOnlyList<int>, string>? decode = null, Action<int>? onToken = null, CancellationToken cancellationToken = default) =>
        GenerateBatch(model, new[] { promptIds }, options, decode, onToken is null ? null : (_, token) => onToken(token), cancellationToken)[0];

    /// <summary>Stop strings are read with <paramref name="tokenizer"/>; unless the options name stop ids, the config's EOS ids and the tokenizer's EOS end generation.</summary>
    public static GenerationResult Generate(ICausalLM model, ITokenizer tokenizer, IReadOnlyList<int> promptIds, GenerationOptions options,
        Action<int>? onToken = null, CancellationToken cancellationToken = default) =>
        Generate(model, promptIds,
            options.StopTokenIds is null ? options with { StopTokenIds = model.Config.EosTokenIds.Append(tokenizer.EosId).Distinct().ToArray() } : options,
            ids => tokenizer.Decode(ids), onToken, cancellationToken);

    /// <summary>
    /// Generates for several prompts at once. Shorter prompts are left-padded; the attention mask and HF's cumulative
    /// position ids make each row's result what it would be alone. <paramref name="onToken"/> gets (row, token).
    /// </summary>
    public static IReadOnlyList<GenerationResult> GenerateBatch(ICausalLM model, IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options,
        Func<IReadOnlyList<int>, string>? decode = null, Action<int, int>? onToken = null, CancellationToken cancellationToken = default)
    {
        if (prompts.Count == 0) throw new ArgumentException("GenerateBatch needs at least one prompt.", nameof(prompts));
        for (int b = 0; b < prompts.Count; b++) {
            if (prompts[b].Count == 0) throw new ArgumentException($"Prompt {b} is empty; start it with at least the BOS token.", nameof(prompts));
            foreach (var id in prompts[b])
                if (id < 0 || id >= model.Config.VocabSize)
                    throw new ArgumentException($"Prompt {b} has token id {id}, outside the model's vocabulary of {model.Config.VocabSize}.", nameof(prompts));
        }
        int batch = prompts.Count, longest = prompts.Max(p => p.Count);
        int padId = PaddingId(model.Config, options);
        var ids = new long[batch * longest];
        var mask = new long[batch * longest];
        for (int b = 0; b < batch; b++) {
            int offset = longest - prompts[b].Count;
            for (int i = 0; i < longest; i++) {
                ids[b * longest + i] = i < offset ? padId : prompts[b][i - offset];
                mask[b * longest + i] = i < offset ? 0 : 1;
            }
        }
        bool padded = prompts.Any(p => p.Count != longest);
        var device = model is nn.Module module ? ModuleDevice(module) : CPU;
        using var noGrad = no_grad();
        using var idsTensor = tensor(ids, new long[] { batch, longest }, device: device);
        using var maskTensor = tensor(mask, new long[] { batch, longest }, device: device);
        var prefill = new CausalLMInput(InputIds: idsTensor, AttentionMask: padded ? maskTensor : null, LastTokenLogitsOnly: true);
        return Decode(model, prefill, prompts, options, decode, onToken, cancellationToken);
    }

    /// <summary>
    /// Decodes after an arbitrary prefill (e.g. image and text embeddings via <see cref="CausalLMInput.InputsEmbeds"/>).
    /// <paramref name="seenIds"/> lists, per row, the ids the repetition penalty should count as already seen.
    /// The prefill's Cache is ignored: a cache sized for prompt + MaxNewTokens is created.
    /// </summary>
    public static IReadOnlyList<GenerationResult> Decode(ICausalLM model, CausalLMInput prefill, IReadOnlyList<IReadOnlyList<int>> seenIds,
        GenerationOptions options, Func<IReadOnlyList<int>, string>? decode = null, Action<int, int>? onToken = null,
        CancellationToken cancellationToken = default)
    {
        options.Validate();
        if (options.StopStrings.Count > 0 && decode is null)
            throw new ArgumentException("GenerationOptions.StopStrings need a decode delegate (or a tokenizer) to read the generated text.", nameof(decode));
        var prompt = prefill.InputIds ?? prefill.InputsEmbeds ?? throw new ArgumentException("The prefill input needs InputIds or InputsEmbeds.", nameof(prefill));
        int batch = (int)prompt.shape[0];
        long promptLength = prompt.shape[1];
        if (seenIds.Count != batch) throw new ArgumentException($"seenIds has {seenIds.Count} rows but the prefill batch has {batch}.", nameof(seenIds));
        var config = model.Config;
        var stopIds = new HashSet<int>(options.StopTokenIds ?? config.EosTokenIds);
        int padId = PaddingId(config, options);
        int stopWindow = options.StopStrings.Count == 0 ? 0 : 4 * options.StopStrings.Max(s => s.Length) + 8;
        var device = prompt.device;

        using var noGrad = no_grad();
        using var cache = new KVCache(config.NumHiddenLayers, promptLength + Math.Max(1, options.MaxNewTokens));
        using var sampler = new Sampler(options);
        using var seen = SeenMask(seenIds, config.VocabSize, device);
        using var markSeen = ones(batch, 1, dtype: ScalarType.Bool, device: device);

        var generated = Enumerable.Range(0, batch).Select(_ => new List<int>(options.MaxNewTokens)).ToArray();
        var finish = new FinishReason?[batch];
        var stopStringFound = new string?[batch];
        var nextTokens = new long[batch];
        if (options.MaxNewTokens == 0) return Results();

        using (var scope = NewDisposeScope()) {
            var output = model.Forward(prefill with { Cache = cache, LastTokenLogitsOnly = true });
            ReadTokens(sampler.Sample(output.Logits.select(1, -1), seen));
        }
        while (true) {
            for (int b = 0; b < batch; b++) {
                if (finish[b] is not null) continue;
                int token = (int)nextTokens[b];
                generated[b].Add(token);
                onToken?.Invoke(b, token);
                if (stopIds.Contains(token)) finish[b] = FinishReason.EndOfSequence;
                else if (stopWindow > 0 && FindStopString(generated[b], stopWindow, options.StopStrings, decode!) is { } stop) {
                    finish[b] = FinishReason.StopString;
                    stopStringFound[b] = stop;
                } else if (generated[b].Count >= options.MaxNewTokens) finish[b] = FinishReason.Length;
            }
            if (finish.All(f => f is not null)) break;
            if (cancellationToken.IsCancellationRequested) {
                for (int b = 0; b < batch; b++) finish[b] ??= FinishReason.Cancelled;
                break;
            }
            using var scope = NewDisposeScope();
            for (int b = 0; b < batch; b++) if (finish[b] is not null) nextTokens[b] = padId;
            var step = tensor(nextTokens, new long[] { batch, 1 }, device: device);
            seen.scatter_(1, step, markSeen);
            var output = model.Forward(new CausalLMInput(InputIds: step, Cache: cache, LastTokenLogitsOnly: true));
            ReadTokens(sampler.Sample(output.Logits.select(1, -1), seen));
        }
        return Results();

        void ReadTokens(Tensor sampled)
        {
            var values = sampled.to(ScalarType.Int64).cpu().data<long>();
            for (int b = 0; b < batch; b++) nextTokens[b] = values[b];
        }

        IReadOnlyList<GenerationResult> Results() =>
            Enumerable.Range(0, batch).Select(b => new GenerationResult(generated[b], finish[b] ?? FinishReason.Length, stopStringFound[b])).ToArray();
    }

    static string? FindStopString(List<int> generated, int window, IReadOnlyList<string> stopStrings, Func<IReadOnlyList<int>, string> decode)
    {
        // Only the tail can hold a newly completed stop string; decoding it keeps each step's cost flat.
        int start = Math.Max(0, generated.Count - window);
        var text = decode(start == 0 ? generated : generated.GetRange(start, generated.Count - start));
        foreach (var stop in stopStrings)
            if (text.Contains(stop, StringComparison.Ordinal)) return stop;
        return null;
    }

    static Tensor SeenMask(IReadOnlyList<IReadOnlyList<int>> seenIds, int vocabSize, Device device)
    {
        var host = new bool[seenIds.Count * vocabSize];
        for (int b = 0; b < seenIds.Count; b++)
            foreach (var id in seenIds[b])
                if (id >= 0 && id < vocabSize) host[b * vocabSize + id] = true;
        return tensor(host, new long[] { seenIds.Count, vocabSize }, device: device);
    }

    static int PaddingId(LlamaConfig config, GenerationOptions options) =>
        config.PadTokenId ?? (options.StopTokenIds ?? config.EosTokenIds).DefaultIfEmpty(0).First();

    static Device ModuleDevice(nn.Module module) => module.parameters().FirstOrDefault()?.device ?? CPU;
}
