// The class is TextGenerator, not Generator, so it never collides with torch.Generator under `using static TorchSharp.torch`.
using VisualChat.Inference.Generation;
using VisualChat.Model;
using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Inference.Generation;

/// <summary>
/// Shortcuts for one-shot generation from a language model over <see cref="GenerationEngine"/> (no decode loop of its
/// own): each prompt becomes one sequence with its own cache, created here and freed when it finishes.
/// </summary>
public static class TextGenerator
{
    public static GenerationResult Generate(ICausalDecoder model, IReadOnlyList<int> promptIds, GenerationOptions options,
        Func<IReadOnlyList<int>, string>? decode = null, Action<int>? onToken = null, CancellationToken cancellationToken = default) =>
        GenerateBatch(model, new[] { promptIds }, options, decode, onToken is null ? null : (_, token) => onToken(token), cancellationToken)[0];

    /// <summary>Stop strings are read with <paramref name="tokenizer"/>; unless the options name stop ids, the config's EOS ids and the tokenizer's EOS end generation.</summary>
    public static GenerationResult Generate(ICausalDecoder model, ITokenizer tokenizer, IReadOnlyList<int> promptIds, GenerationOptions options,
        Action<int>? onToken = null, CancellationToken cancellationToken = default, Action<string>? onText = null)
    {
        using var state = model.CreateState(Capacity(promptIds.Count, options));
        return new GenerationEngine(model, tokenizer).Generate(new GenerationRequest(state, new DecoderPrompt(promptIds), options) {
            OnToken = onToken, OnText = onText, CancellationToken = cancellationToken, TextContext = promptIds,
        });
    }

    /// <summary>Generates for several prompts in one running batch; each row's result is what it would be alone.
    /// <paramref name="onToken"/> gets (row, token).</summary>
    public static IReadOnlyList<GenerationResult> GenerateBatch(ICausalDecoder model, IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options,
        Func<IReadOnlyList<int>, string>? decode = null, Action<int, int>? onToken = null, CancellationToken cancellationToken = default)
    {
        if (prompts.Count == 0) throw new ArgumentException("GenerateBatch needs at least one prompt.", nameof(prompts));
        return Run(model, prompts.Select(p => new DecoderPrompt(p)).ToArray(), options, decode, onToken, cancellationToken);
    }

    /// <summary>
    /// Decodes after an arbitrary prefill (e.g. embeddings via <see cref="CausalLMInput.InputsEmbeds"/>, tagged by
    /// <see cref="CausalLMInput.TokenModality"/>); rows are split into sequences (positions with attention mask 0 dropped).
    /// <paramref name="seenIds"/> lists, per row, the ids the repetition penalty counts as already seen. The prefill's
    /// Cache is ignored: each row gets its own.
    /// </summary>
    public static IReadOnlyList<GenerationResult> Decode(ICausalDecoder model, CausalLMInput prefill, IReadOnlyList<IReadOnlyList<int>> seenIds,
        GenerationOptions options, Func<IReadOnlyList<int>, string>? decode = null, Action<int, int>? onToken = null,
        CancellationToken cancellationToken = default)
    {
        var prompt = prefill.InputIds ?? prefill.InputsEmbeds ?? throw new ArgumentException("The prefill input needs InputIds or InputsEmbeds.", nameof(prefill));
        int batch = (int)prompt.shape[0];
        if (seenIds.Count != batch) throw new ArgumentException($"seenIds has {seenIds.Count} rows but the prefill batch has {batch}.", nameof(seenIds));
        using var scope = NewDisposeScope();
        var prompts = new DecoderPrompt[batch];
        for (int b = 0; b < batch; b++) {
            var rowMask = prefill.AttentionMask is { } mask ? HostInts(mask.select(0, b).narrow(0, mask.shape[1] - prompt.shape[1], prompt.shape[1])) : null;
            var keep = tensor(Enumerable.Range(0, (int)prompt.shape[1]).Where(t => rowMask is null || rowMask[t] != 0).Select(t => (long)t).ToArray(), device: prompt.device);
            var modality = prefill.TokenModality?.select(0, b).index_select(0, keep.to(prefill.TokenModality.device)).unsqueeze(0);
            prompts[b] = prefill.InputIds is { } ids
                ? new DecoderPrompt(HostInts(ids.select(0, b).index_select(0, keep)), Modality: modality)
                : new DecoderPrompt(seenIds[b], InputsEmbeds: prefill.InputsEmbeds!.select(0, b).index_select(0, keep).unsqueeze(0), Modality: modality);
        }
        return Run(model, prompts, options, decode, onToken, cancellationToken, seenIds);
    }

    static IReadOnlyList<GenerationResult> Run(ICausalDecoder model, IReadOnlyList<DecoderPrompt> prompts, GenerationOptions options,
        Func<IReadOnlyList<int>, string>? decode, Action<int, int>? onToken, CancellationToken cancellationToken, IReadOnlyList<IReadOnlyList<int>>? seenIds = null)
    {
        options.Validate();
        var engine = new GenerationEngine(model, decode);
        var states = new List<DecoderState>();
        try {
            var requests = new List<GenerationRequest>();
            for (int b = 0; b < prompts.Count; b++) {
                int row = b;
                var state = model.CreateState(Capacity(prompts[b].InputsEmbeds?.shape[1] ?? prompts[b].Ids.Count, options));
                states.Add(state);
                if (seenIds is not null && prompts[b].InputsEmbeds is null) state.AddHistory(0, seenIds[b].Except(prompts[b].Ids));
                requests.Add(new GenerationRequest(state, prompts[b], options) {
                    OnToken = onToken is null ? null : token => onToken(row, token), CancellationToken = cancellationToken,
                });
            }
            return engine.Generate(requests);
        } finally {
            foreach (var state in states) state.Dispose();
        }
    }

    static long Capacity(long promptLength, GenerationOptions options) => promptLength + Math.Max(1, options.MaxNewTokens);

    static int[] HostInts(Tensor ids)
    {
        using var host = ids.to(ScalarType.Int64).cpu();
        return host.data<long>().Select(i => (int)i).ToArray();
    }
}
