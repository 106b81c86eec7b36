using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// A training or evaluation batch as the chat model takes it: <paramref name="InputIds"/> [B, L] with one image
/// placeholder id per image, <paramref name="Labels"/> [B, L] (-100 = no target), <paramref name="AttentionMask"/> [B, L]
/// (1 = token; null = all tokens), how many images each sample holds (<paramref name="ImageCounts"/>), and their
/// preprocessed pixels [N, 3, S, S] in sample order, each sample's images in placeholder order.
/// <paramref name="ImageKeys"/> optionally names each image for the <see cref="Vision.Encoders.VisionFeatureCache"/>.
/// </summary>
public sealed record VisualChatBatch(
    Tensor InputIds,
    Tensor? Labels,
    Tensor? AttentionMask,
    IReadOnlyList<int> ImageCounts,
    Tensor? Pixels,
    IReadOnlyList<string>? ImageKeys = null);

/// <summary>
/// The language model's view of a batch once every placeholder became its image's tokens:
/// <paramref name="InputsEmbeds"/> [B, L', D], <paramref name="Modality"/> [B, L'] int64 (<see cref="TokenModality"/>:
/// 0 padding, 1 text, 2 image), <paramref name="Labels"/> [B, L'] (-100 on images, prompts and padding; null when the
/// batch had none), <paramref name="AttentionMask"/> [B, L'] int64, and for <c>causal+cross</c> the image memory.
/// </summary>
public sealed record InterleavedInput(Tensor InputsEmbeds, Tensor Modality, Tensor? Labels, Tensor AttentionMask, CrossAttentionMemory? Memory)
{
    public long Length => InputsEmbeds.shape[1];
}

/// <param name="Logits">[B, L', lm_vocab_size].</param>
/// <param name="Loss">Mean cross-entropy over answer tokens (HF shift); exactly 0 when the batch has none. Null without labels.</param>
/// <param name="AnswerTokens">How many targets the loss averages over.</param>
public sealed record VisualChatOutput(Tensor Logits, Tensor? Loss, long AnswerTokens, InterleavedInput Input);
