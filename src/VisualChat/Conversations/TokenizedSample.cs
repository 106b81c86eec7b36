namespace VisualChat.Conversations;

/// <summary>A tokenized conversation. <see cref="Labels"/> is -100 on prompt tokens. <see cref="ImagePositions"/> are
/// the indices of the <c>&lt;image&gt;</c> placeholder tokens, one per entry of <see cref="Images"/>, in order.</summary>
public sealed record TokenizedSample(
    int[] InputIds,
    int[] Labels,
    int[] ImagePositions,
    IReadOnlyList<ImageRef> Images,
    Conversation Source)
{
    public int Length => InputIds.Length;

    /// <summary>Sequence length the language model sees once each placeholder becomes <paramref name="imageTokens"/>
    /// embeddings.</summary>
    public int ExpandedLength(int imageTokens) => InputIds.Length + Images.Count * (imageTokens - 1);
}
