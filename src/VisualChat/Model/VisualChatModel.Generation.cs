using TorchSharp;
using VisualChat.Attention;
using VisualChat.Conversations;
using static TorchSharp.torch;

namespace VisualChat.Model;

public sealed partial class VisualChatModel : ICausalDecoder
{
    /// <summary>A fresh conversation state for <paramref name="batchSize"/> conversations decoded together.</summary>
    public VisualChatConversationState CreateConversation(int batchSize = 1, long capacity = 512) =>
        new(LmConfig.NumHiddenLayers, batchSize, capacity);

    /// <summary>One conversation: appends a round's prompt ids (placeholders included) and its new images [n, 3, S, S].</summary>
    public void Append(VisualChatConversationState state, IReadOnlyList<int> ids, Tensor? pixels = null) =>
        Append(state, new[] { ids }, new[] { pixels });

    /// <summary>
    /// Appends, for each row, only the new round's text and images to the cache: earlier images are not re-encoded and
    /// earlier turns not re-run. Rows with fewer new tokens are left-padded (masked for the rest of the conversation).
    /// The new images of all rows are encoded in one batch.
    /// </summary>
    public void Append(VisualChatConversationState state, IReadOnlyList<IReadOnlyList<int>> idsPerRow, IReadOnlyList<Tensor?> pixelsPerRow)
    {
        int batch = state.BatchSize;
        if (idsPerRow.Count != batch || pixelsPerRow.Count != batch)
            throw new ArgumentException($"The conversation state has {batch} rows but {idsPerRow.Count} id lists and {pixelsPerRow.Count} image sets were given.");
        var imageCounts = new int[batch];
        for (int b = 0; b < batch; b++) {
            if (idsPerRow[b].Count == 0) throw new ArgumentException($"Row {b} appends no tokens; every row needs at least one.", nameof(idsPerRow));
            imageCounts[b] = (int)(pixelsPerRow[b]?.shape[0] ?? 0);
            if (Config.MaxImages is { } max && state.ImageCounts[b] + imageCounts[b] > max)
                throw new ArgumentException($"Row {b} would hold {state.ImageCounts[b] + imageCounts[b]} images; {VisualChatConfig.FileName} allows max_images {max}.", nameof(pixelsPerRow));
            foreach (var id in idsPerRow[b])
            {
                if (id < 0 || id >= EmbeddingRows)
                    throw new ArgumentException($"Row {b} has token id {id}, outside the embedding matrix of {EmbeddingRows} rows.", nameof(idsPerRow));
            }
        }
        int longest = idsPerRow.Max(r => r.Count);
        var ids = new long[batch * longest];
        var mask = new long[batch * longest];
        for (int b = 0; b < batch; b++) {
            int offset = longest - idsPerRow[b].Count;
            for (int t = 0; t < idsPerRow[b].Count; t++) {
                ids[b * longest + offset + t] = idsPerRow[b][t];
                mask[b * longest + offset + t] = 1;
            }
        }
        var device = lm.model.embed_tokens.weight!.device;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var present = pixelsPerRow.Where(p => p is not null && p.shape[0] > 0).Select(p => p!.to(device)).ToArray();
        var imageEmbeds = present.Length > 0 ? EncodeImages(cat(present, 0)) : null;
        var input = Interleave(tensor(ids, new long[] { batch, longest }, device: device), null, tensor(mask, new long[] { batch, longest }, device: device),
            imageCounts, imageEmbeds, padToMultipleOf: 1, leftPadding: true, slotOffset: state.Length);
        if (input.Memory is { } memory) state.AppendMemory(memory);
        var logits = RunLanguageModel(input.InputsEmbeds, input.AttentionMask, input.Modality, state.Memory, state.Cache, lastTokenOnly: true);
        state.SetNextLogits(logits.select(1, 0));
        for (int b = 0; b < batch; b++) {
            state.AddImages(b, imageCounts[b]);
            state.AddHistory(b, idsPerRow[b]);
        }
    }

    IReadOnlyList<int> ICausalDecoder.EosTokenIds => LmConfig.EosTokenIds;
    public long MaxContext => LmConfig.MaxPositionEmbeddings;

    /// <summary>Positions a round of <paramref name="idCount"/> ids takes in the cache once each of its
    /// <paramref name="imageCount"/> placeholders became the image's tokens.</summary>
    public long PromptPositions(int idCount, int imageCount) => idCount + (long)imageCount * (ImageTokens - 1);

    DecoderState ICausalDecoder.CreateState(long capacity) => CreateConversation(1, capacity);

    /// <summary>Appends a round (ids with placeholders, its new images as <see cref="DecoderPrompt.Pixels"/>) to a single
    /// conversation; see <see cref="Append(VisualChatConversationState, IReadOnlyList{int}, Tensor?)"/>.</summary>
    public void Prefill(DecoderState state, DecoderPrompt prompt)
    {
        if (prompt.InputsEmbeds is not null || prompt.Modality is not null)
            throw new ArgumentException("VisualChatModel builds the embeddings and modality of a prompt itself from its ids and pixels; give DecoderPrompt.Ids and Pixels only.", nameof(prompt));
        Append(Conversation(state), prompt.Ids, prompt.Pixels);
    }

    /// <summary>Feeds each single conversation its token through the trained embedding, tagged text; the cross-attention
    /// memory of each conversation is its own, so every state runs its own forward.</summary>
    public void Step(IReadOnlyList<DecoderState> states, IReadOnlyList<int> tokens)
    {
        if (states.Count != tokens.Count) throw new ArgumentException($"Step got {states.Count} states but {tokens.Count} tokens.", nameof(tokens));
        for (int i = 0; i < states.Count; i++) {
            Conversation(states[i]).RequireSingleSequence("VisualChatModel.Step");
            if (tokens[i] < 0 || tokens[i] >= EmbeddingRows)
                throw new ArgumentException($"Token id {tokens[i]} is outside the embedding matrix of {EmbeddingRows} rows.", nameof(tokens));
        }
        // Causal and mmca decode text steps in the fused kernels; causal+cross reads each conversation's image memory.
        if (lm.TryFusedStep(states, tokens, Config.LmVocabSize)) return;
        var device = lm.model.embed_tokens.weight!.device;
        using var noGrad = no_grad();
        for (int i = 0; i < states.Count; i++) {
            var state = Conversation(states[i]);
            using var scope = NewDisposeScope();
            var step = tensor(new long[] { tokens[i] }, new long[] { 1, 1 }, device: device);
            var logits = RunLanguageModel(Embed(step), null, TextStepModality(device), state.Memory, state.Cache, lastTokenOnly: true);
            state.SetNextLogits(logits.select(1, 0));
            state.AddHistory(0, [tokens[i]]);
        }
    }

    static Tensor TextStepModality(Device device) => tensor(new[] { (long)TokenModality.Text }, new long[] { 1, 1 }, device: device);

    static VisualChatConversationState Conversation(DecoderState state) => state as VisualChatConversationState
        ?? throw new ArgumentException($"VisualChatModel decodes VisualChatConversationState (from CreateConversation), not {state.GetType().Name}.", nameof(state));
}
