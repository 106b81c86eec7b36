using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Model;

public sealed partial class LlamaForCausalLM
{
    int ICausalDecoder.OutputVocabSize => Config.VocabSize;
    IReadOnlyList<int> ICausalDecoder.EosTokenIds => Config.EosTokenIds;
    long ICausalDecoder.MaxContext => Config.MaxPositionEmbeddings;

    DecoderState ICausalDecoder.CreateState(long capacity) => new(Config.NumHiddenLayers, capacity);

    /// <summary>Runs the prompt (its ids, or <see cref="DecoderPrompt.InputsEmbeds"/>, tagged by
    /// <see cref="DecoderPrompt.Modality"/> when given) through the state's cache.</summary>
    public void Prefill(DecoderState state, DecoderPrompt prompt)
    {
        state.RequireSingleSequence("LlamaForCausalLM.Prefill");
        if (prompt.Pixels is not null)
            throw new ArgumentException("A LLaMA language model takes no images; DecoderPrompt.Pixels must be null (use a VisualChatModel).", nameof(prompt));
        if (prompt.Ids.Count == 0) throw new ArgumentException("The prompt is empty; start it with at least the BOS token.", nameof(prompt));
        if (prompt.InputsEmbeds is null)
        {
            foreach (var id in prompt.Ids)
            {
                if (id < 0 || id >= Config.VocabSize)
                    throw new ArgumentException($"The prompt has token id {id}, outside the model's vocabulary of {Config.VocabSize}.", nameof(prompt));
            }
        }

        if (IsQuantized && prompt.InputsEmbeds is null && prompt.Modality is null && !state.Cache.HasModality && PrefillFused(state, prompt.Ids)) return;
        var device = model.embed_tokens.weight!.device;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var input = prompt.InputsEmbeds is { } embeds
            ? new CausalLMInput(InputsEmbeds: embeds.to(device))
            : new CausalLMInput(InputIds: tensor(prompt.Ids.Select(i => (long)i).ToArray(), new long[] { 1, prompt.Ids.Count }, device: device));
        var output = forward(input with { Cache = state.Cache, TokenModality = prompt.Modality?.to(device) ?? StepModality(state.Cache, input, device), LastTokenLogitsOnly = true });
        state.SetNextLogits(output.Logits.select(1, 0));
        state.AddHistory(0, prompt.Ids);
    }

    /// <summary>Feeds one token per single-sequence state. All states decode in one fused step when the model allows it
    /// (<see cref="FusedDecodeUnavailableReason"/>); otherwise each state runs its own libtorch forward.</summary>
    public void Step(IReadOnlyList<DecoderState> states, IReadOnlyList<int> tokens)
    {
        if (states.Count != tokens.Count) throw new ArgumentException($"Step got {states.Count} states but {tokens.Count} tokens.", nameof(tokens));
        for (int i = 0; i < states.Count; i++) {
            states[i].RequireSingleSequence("LlamaForCausalLM.Step");
            if (tokens[i] < 0 || tokens[i] >= Config.VocabSize)
                throw new ArgumentException($"Token id {tokens[i]} is outside the model's vocabulary of {Config.VocabSize}.", nameof(tokens));
        }
        if (TryFusedStep(states, tokens, Config.VocabSize)) return;
        var device = model.embed_tokens.weight!.device;
        using var noGrad = no_grad();
        for (int i = 0; i < states.Count; i++) {
            var state = states[i];
            using var scope = NewDisposeScope();
            var input = new CausalLMInput(InputIds: tensor(new long[] { tokens[i] }, new long[] { 1, 1 }, device: device));
            var output = forward(input with { Cache = state.Cache, TokenModality = StepModality(state.Cache, input, device), LastTokenLogitsOnly = true });
            state.SetNextLogits(output.Logits.select(1, 0));
            state.AddHistory(0, [tokens[i]]);
        }
    }

    /// <summary>A quantized model's prompt goes through the fused step one token at a time: libtorch would have to
    /// dequantize every matrix for each prefill, which for a 7B model costs more than the prompt's own arithmetic.
    /// False, with no token fed, when the fused step does not apply (the libtorch prefill then runs).</summary>
    bool PrefillFused(DecoderState state, IReadOnlyList<int> ids)
    {
        var cache = state.Cache;
        cache.EnsureDecodeStorage(Config.KeyValueHeads, Config.HeadDim, ScalarType.Float32, model.embed_tokens.weight!.device);
        var single = new DecoderState[] { state };
        var token = new int[1];
        for (int i = 0; i < ids.Count; i++) {
            token[0] = ids[i];
            if (TryFusedStep(single, token, Config.VocabSize)) continue;
            if (i == 0) return false;
            // Whether the fused step applies depends on the model and the cache, which do not change within a prompt.
            throw new InvalidOperationException($"The fused prefill stopped at token {i} of {ids.Count}: {FusedDecodeUnavailableReason}; set FusedDecode = false to prefill through libtorch.");
        }
        return true;
    }

    /// <summary>A cache that carries modality (an earlier tagged prefill) gets its new tokens tagged text; untagged
    /// input to an untagged cache stays untagged (plain text attention).</summary>
    static Tensor? StepModality(KVCache cache, CausalLMInput input, Device device)
    {
        if (!cache.HasModality) return null;
        long length = (input.InputIds ?? input.InputsEmbeds)!.shape[1];
        return full(1, length, TokenModalityScalars.Text, dtype: ScalarType.Int64, device: device);
    }

    LlamaStepDecoder? stepDecoder;
    IAttentionKernel? stepDecoderKernel;
    readonly List<KVCache> stepCaches = [];
    readonly List<Tensor> stepLogits = [];

    /// <summary>Decode steps run the fused C# kernels (<see cref="LlamaStepDecoder"/>) when they apply; false forces the
    /// libtorch forward (the reference path, and the baseline of <c>vchat bench decode</c>).</summary>
    public bool FusedDecode { get; set; } = true;

    /// <summary>The fused decoder's time split since the last call (null before a fused step), and its weight bytes per
    /// step for <paramref name="sequences"/> sequences; for benchmarks.</summary>
    internal (DecodeTimeSplit Split, long WeightBytes)? TakeFusedDecodeProfile(int sequences) =>
        stepDecoder is null ? null : (stepDecoder.TakeTimeSplit(), stepDecoder.WeightBytesPerStep(sequences));

    /// <summary>Why the last step did not use the fused kernels, or null when it did (or no step ran yet).</summary>
    public string? FusedDecodeUnavailableReason { get; private set; }

    /// <summary>One fused step for all <paramref name="states"/> (each gets logits over the first
    /// <paramref name="outputRows"/> head rows); false, with nothing changed, when it does not apply.</summary>
    internal bool TryFusedStep(IReadOnlyList<DecoderState> states, IReadOnlyList<int> tokens, int outputRows)
    {
        if (states.Count == 0) return true;
        if (!FusedDecode) {
            FusedDecodeUnavailableReason = $"{nameof(FusedDecode)} is off";
            return false;
        }
        var kernel = AttentionKernel;
        if (stepDecoder is null || !ReferenceEquals(stepDecoderKernel, kernel)) {
            stepDecoder?.Dispose();
            stepDecoder = LlamaStepDecoder.TryCreatePlan(this, kernel, out var why);
            stepDecoderKernel = kernel;
            if (stepDecoder is null) {
                FusedDecodeUnavailableReason = why;
                return false;
            }
        }
        if (stepDecoder is null) return false;
        stepCaches.Clear();
        foreach (var state in states) stepCaches.Add(state.Cache);
        if (!stepDecoder.TryPrepare(stepCaches, outputRows, out var reason)) {
            FusedDecodeUnavailableReason = reason;
            return false;
        }
        FusedDecodeUnavailableReason = null;
        int vocab = stepDecoder.OutputRows;
        stepLogits.Clear();
        foreach (var state in states) {
            // The state's logits tensor is reused across steps; a new one only when it is not a plain [1, vocab] fp32 row.
            if (state.NextLogits is not { } current || current.dtype != ScalarType.Float32 || current.dim() != 2 || current.shape[1] != vocab
                || !Weights.TensorMemory.IsAddressable(current)) {
                state.SetNextLogits(empty(1, vocab));
            }
            stepLogits.Add(state.NextLogits!);
        }
        stepDecoder.Step(stepCaches, tokens, stepLogits);
        for (int i = 0; i < states.Count; i++) states[i].AddHistory(0, [tokens[i]]);
        stepCaches.Clear();
        stepLogits.Clear();
        return true;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) {
            stepDecoder?.Dispose();
            stepDecoder = null;
        }
        base.Dispose(disposing);
    }
}
