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

        var device = OutputEmbeddingWeight.device;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var input = prompt.InputsEmbeds is { } embeds
            ? new CausalLMInput(InputsEmbeds: embeds.to(device))
            : new CausalLMInput(InputIds: tensor(prompt.Ids.Select(i => (long)i).ToArray(), new long[] { 1, prompt.Ids.Count }, device: device));
        var output = forward(input with { Cache = state.Cache, TokenModality = prompt.Modality?.to(device) ?? StepModality(state.Cache, input, device), LastTokenLogitsOnly = true });
        state.SetNextLogits(output.Logits.select(1, 0));
        state.AddHistory(0, prompt.Ids);
    }

    /// <summary>Feeds one token per single-sequence state; each state has its own cache length, so each runs its own forward.</summary>
    public void Step(IReadOnlyList<DecoderState> states, IReadOnlyList<int> tokens)
    {
        if (states.Count != tokens.Count) throw new ArgumentException($"Step got {states.Count} states but {tokens.Count} tokens.", nameof(tokens));
        var device = OutputEmbeddingWeight.device;
        using var noGrad = no_grad();
        for (int i = 0; i < states.Count; i++) {
            var state = states[i];
            state.RequireSingleSequence("LlamaForCausalLM.Step");
            if (tokens[i] < 0 || tokens[i] >= Config.VocabSize)
                throw new ArgumentException($"Token id {tokens[i]} is outside the model's vocabulary of {Config.VocabSize}.", nameof(tokens));
            using var scope = NewDisposeScope();
            var input = new CausalLMInput(InputIds: tensor(new long[] { tokens[i] }, new long[] { 1, 1 }, device: device));
            var output = forward(input with { Cache = state.Cache, TokenModality = StepModality(state.Cache, input, device), LastTokenLogitsOnly = true });
            state.SetNextLogits(output.Logits.select(1, 0));
            state.AddHistory(0, [tokens[i]]);
        }
    }

    /// <summary>A cache that carries modality (an earlier tagged prefill) gets its new tokens tagged text; untagged
    /// input to an untagged cache stays untagged (plain text attention).</summary>
    static Tensor? StepModality(KVCache cache, CausalLMInput input, Device device)
    {
        if (!cache.HasModality) return null;
        long length = (input.InputIds ?? input.InputsEmbeds)!.shape[1];
        return full(1, length, TokenModalityScalars.Text, dtype: ScalarType.Int64, device: device);
    }
}
