using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// One forward pass. Exactly one of <paramref name="InputIds"/> [B, L] and <paramref name="InputsEmbeds"/> [B, L, hidden].
/// <paramref name="AttentionMask"/> is 1 for real tokens, 0 for padding, over the new tokens [B, L] or, as HF passes it,
/// over cached + new tokens. Position ids default to the running count of real tokens (HF's left-padding rule).
/// <paramref name="TokenModality"/> [B, L] tags each new token for multi-modal attention kernels (null for text).
/// <paramref name="AttentionExtension"/> is per-forward data for the attention kernel (e.g. the <c>causal+cross</c>
/// image memory), handed to it through <see cref="AttentionContext.Extension"/>.
/// </summary>
public sealed record CausalLMInput(
    Tensor? InputIds = null,
    Tensor? InputsEmbeds = null,
    Tensor? PositionIds = null,
    Tensor? AttentionMask = null,
    KVCache? Cache = null,
    Tensor? TokenModality = null,
    bool OutputHiddenStates = false,
    // Logits only for the last position: generation does not need the others.
    bool LastTokenLogitsOnly = false,
    IAttentionExtension? AttentionExtension = null);

/// <param name="Logits">[B, L, vocab] (or [B, 1, vocab] with LastTokenLogitsOnly).</param>
/// <param name="LastHiddenState">[B, L, hidden] after the final norm, when asked for.</param>
public sealed record CausalLMOutput(Tensor Logits, Tensor? LastHiddenState, KVCache? Cache);

/// <summary>Hidden states out of <see cref="LlamaModel"/>.</summary>
public sealed record DecoderOutput(Tensor LastHiddenState, KVCache? Cache);

/// <summary>What each decoder layer receives besides the hidden states; built once per forward. Disposing it frees the
/// attention context's per-forward state.</summary>
internal sealed record DecoderLayerContext(Tensor Cos, Tensor Sin, AttentionContext Attention, IAttentionKernel Kernel, KVCache? Cache) : IDisposable
{
    public void Dispose() => Attention.Dispose();
}

/// <summary>A causal language model the generator can drive.</summary>
public interface ICausalLM
{
    LlamaConfig Config { get; }
    CausalLMOutput Forward(CausalLMInput input);
    /// <summary>Token embeddings [B, L, hidden] for ids [B, L].</summary>
    Tensor Embed(Tensor inputIds);
}
