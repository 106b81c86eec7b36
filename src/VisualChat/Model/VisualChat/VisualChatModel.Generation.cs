using TorchSharp;
using VisualChat.Attention;
using VisualChat.Inference;
using static TorchSharp.torch;

namespace VisualChat.Model;

public sealed partial class VisualChatModel
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
                if (id < 0 || id >= EmbeddingRows)
                    throw new ArgumentException($"Row {b} has token id {id}, outside the embedding matrix of {EmbeddingRows} rows.", nameof(idsPerRow));
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

    /// <summary>
    /// Decodes an answer for every row from the state's next-token logits, feeding each generated token through the
    /// same trained embedding, and leaves the answers (with the EOS that ended them) in the cache so the next
    /// <c>Append</c> continues the conversation. A row that has finished gets masked padding steps while the
    /// others go on. <paramref name="onToken"/> receives (row, token).
    /// </summary>
    public IReadOnlyList<GenerationResult> Generate(VisualChatConversationState state, GenerationOptions options,
        Action<int, int>? onToken = null, CancellationToken cancellationToken = default, Func<IReadOnlyList<int>, string>? decode = null)
    {
        options.Validate();
        if (state.NextLogits is null) throw new InvalidOperationException("Append a prompt to the conversation before generating.");
        if (options.StopStrings.Count > 0 && decode is null)
            throw new ArgumentException("GenerationOptions.StopStrings need a decode delegate to read the generated text.", nameof(decode));
        int batch = state.BatchSize;
        var stopIds = new HashSet<int>(options.StopTokenIds ?? LmConfig.EosTokenIds);
        var generated = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var finish = new FinishReason?[batch];
        var stopFound = new string?[batch];
        if (options.MaxNewTokens == 0) return Results();

        var device = state.NextLogits.device;
        int padId = LmConfig.PadTokenId ?? stopIds.DefaultIfEmpty(0).First();
        using var noGrad = no_grad();
        using var sampler = new Sampler(options);
        var seenHost = new bool[batch * OutputVocabSize];
        for (int b = 0; b < batch; b++)
            foreach (var id in state.History[b])
                if (id >= 0 && id < OutputVocabSize) seenHost[b * OutputVocabSize + id] = true;
        using var seen = tensor(seenHost, new long[] { batch, OutputVocabSize }, device: device);
        using var markSeen = ones(batch, 1, dtype: ScalarType.Bool, device: device);
        var stepIds = new long[batch];
        var stepMask = new long[batch];
        var stepModality = new long[batch];
        Tensor logits = state.NextLogits;

        while (true) {
            using var scope = NewDisposeScope();
            var sampled = sampler.Sample(logits, seen).to(ScalarType.Int64).cpu().data<long>().ToArray();
            bool anyActive = false;
            for (int b = 0; b < batch; b++) {
                bool active = finish[b] is null;
                stepIds[b] = active ? sampled[b] : padId;
                stepMask[b] = active ? 1 : 0;
                stepModality[b] = active ? (long)TokenModality.Text : (long)TokenModality.Padding;
                if (!active) continue;
                anyActive = true;
                int token = (int)sampled[b];
                generated[b].Add(token);
                onToken?.Invoke(b, token);
                if (stopIds.Contains(token)) finish[b] = FinishReason.EndOfSequence;
                else if (decode is not null && options.StopStrings.FirstOrDefault(s => decode(generated[b]).Contains(s, StringComparison.Ordinal)) is { } stop) {
                    finish[b] = FinishReason.StopString;
                    stopFound[b] = stop;
                } else if (generated[b].Count >= options.MaxNewTokens) finish[b] = FinishReason.Length;
            }
            if (!anyActive) break;
            // The token just chosen joins the cache even when it ends the answer, so the next round sees it.
            var step = tensor(stepIds, new long[] { batch, 1 }, device: device);
            seen.scatter_(1, step, markSeen);
            var embeds = Embed(step);
            var stepLogits = RunLanguageModel(embeds, tensor(stepMask, new long[] { batch, 1 }, device: device),
                tensor(stepModality, new long[] { batch, 1 }, device: device), state.Memory, state.Cache, lastTokenOnly: true);
            state.SetNextLogits(stepLogits.select(1, 0));
            logits = state.NextLogits!;
            if (finish.All(f => f is not null)) break;
            if (cancellationToken.IsCancellationRequested) {
                for (int b = 0; b < batch; b++) finish[b] ??= FinishReason.Cancelled;
                break;
            }
        }
        for (int b = 0; b < batch; b++) state.AddHistory(b, generated[b]);
        return Results();

        IReadOnlyList<GenerationResult> Results() =>
            Enumerable.Range(0, batch).Select(b => new GenerationResult(generated[b], finish[b] ?? FinishReason.Length, stopFound[b])).ToArray();
    }
}
