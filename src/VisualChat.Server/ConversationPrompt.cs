using System.Security.Cryptography;
using System.Text;
using VisualChat.Conversations;
using VisualChat.Model;
using VisualChat.Vision;
using VisualChat.Vision.Imaging;

namespace VisualChat.Server;

/// <summary>
/// A piece of a conversation's prompt that is prefilled as one forward: the previous round's answer (with its EOS) and
/// this round's prompt with its new images. <see cref="Key"/> hashes every chunk up to and including this one (ids and
/// image content hashes), so equal keys mean equal caches.
/// </summary>
public sealed record PromptChunk(int[] Ids, IReadOnlyList<RgbImage> Images, long Positions, string Key);

/// <summary>
/// A chat request as the model sees it: the DSVC template's tokens of every round ("### Image k:" numbered across the
/// conversation, earlier answers from the assistant messages), cut into one <see cref="PromptChunk"/> per round.
/// Every request is prefilled chunk by chunk in this fixed schedule, cold or warm, so reused chunks hold what a cold run
/// computes for them — exactly, until a reused generated answer (computed by decode steps, not a prefill) enters the
/// cache; from then on equal up to float rounding.
/// </summary>
public sealed class ConversationPrompt
{
    ConversationPrompt(IReadOnlyList<PromptChunk> chunks) => Chunks = chunks;

    public IReadOnlyList<PromptChunk> Chunks { get; }
    /// <summary>Cache positions of the whole prompt (each image placeholder counted as the image's tokens).</summary>
    public long Positions => Chunks.Sum(c => c.Positions);

    public static ConversationPrompt Build(ChatCompletionRequest request, VisualChatProcessor processor, VisualChatModel model)
    {
        var conversation = new Conversation("chat",
            request.Rounds.Select((r, i) => new Round(
                r.Images.Select(image => (ImageRef)new FileImageRef(image.Source)).ToArray(),
                r.Question,
                i == request.Rounds.Count - 1 ? null : r.Answer ?? "")).ToArray(),
            [], request.System);
        var template = request.System is null ? processor.Template : new ConversationTemplate(processor.TemplateOptions with { SystemPrompt = request.System });
        var rounds = template.TokenizeRounds(conversation, processor.Tokenizer);
        int imageId = ConversationTemplate.ImageTokenId(processor.Tokenizer);
        if (rounds.Sum(r => r.InputIds.Count(id => id == imageId)) != request.ImageCount)
            throw ApiException.BadRequest($"The messages' text contains the reserved image placeholder '{ConversationTemplate.ImagePlaceholder}'; remove it (images go in image_url parts).", "messages");

        var chunks = new List<PromptChunk>(rounds.Count);
        var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        string previous = "";
        int[] carried = [];
        for (int r = 0; r < rounds.Count; r++) {
            var round = rounds[r];
            // The prompt is the leading part with ignored labels; the answer (and its EOS) goes with the next round's
            // prompt, so every chunk ends right before an answer and the last one right before the answer to generate.
            int promptLength = 0;
            while (promptLength < round.Labels.Length && round.Labels[promptLength] == ConversationTemplate.IgnoreLabel) promptLength++;
            int[] ids = [.. carried, .. round.InputIds.AsSpan(0, promptLength)];
            carried = round.InputIds[promptLength..];
            var images = request.Rounds[round.RoundIndex].Images;
            hash.AppendData(Encoding.UTF8.GetBytes(previous));
            var bytes = new byte[ids.Length * 4];
            Buffer.BlockCopy(ids, 0, bytes, 0, bytes.Length);
            hash.AppendData(bytes);
            foreach (var image in images) hash.AppendData(Encoding.ASCII.GetBytes(image.Hash));
            previous = Convert.ToHexString(hash.GetHashAndReset());
            chunks.Add(new PromptChunk(ids, images.Select(i => i.Image).ToArray(), model.PromptPositions(ids.Length, images.Count), previous));
        }
        return new ConversationPrompt(chunks);
    }
}
