using VisualChat.Conversations;
using VisualChat.Data.Synthetic;
using VisualChat.Model;
using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>Token ids of the description words, by count − 1, colour and kind.</summary>
public sealed record DescriptionVocabulary(long[] Count, long[] Colour, long[] Kind, long ImageMarker)
{
    /// <param name="answerTokens">Describe with the tokens the answers are written in ("red" at the start of an answer
    /// line, no "▁") where the tokenizer has such a single piece, so that reading an attribute out of an image slot and
    /// writing it as the answer are the same token (the LM's head is tied to its embeddings). Otherwise, and for words
    /// without such a piece, the "▁word" pieces.</param>
    public static DescriptionVocabulary From(SentencePieceTokenizer tokenizer, bool answerTokens = false)
    {
        long Id(string word) => (answerTokens ? tokenizer.TokenToId(word) : null) ?? DemoTokenizer.WordId(tokenizer, word);
        return new(
            Enumerable.Range(1, 4).Select(i => Id(i.ToString())).ToArray(),
            Enum.GetValues<ShapeColor>().Select(c => Id(ShapeScene.Name(c))).ToArray(),
            Enum.GetValues<ShapeKind>().Select(k => Id(ShapeScene.Name(k))).ToArray(),
            ConversationTemplate.ImageTokenId(tokenizer));
    }

    /// <summary>
    /// Stage-2 image embeddings, <paramref name="imageTokens"/> per scene in placeholder order. One token: the sum of the
    /// description words' embeddings ("3" + "red" + "circle"), so the slot carries exactly what a caption would. Four
    /// tokens: the &lt;image&gt; marker, then count, colour and kind each in its own slot, so reading an attribute is a
    /// copy by attention rather than the untangling of a sum.
    /// </summary>
    public Tensor Embeddings(LlamaForCausalLM lm, IReadOnlyList<ShapeScene> scenes, int imageTokens)
    {
        using var scope = NewDisposeScope();
        var words3 = scenes.SelectMany(s => new long[] { Count[s.Count - 1], Colour[(int)s.Color], Kind[(int)s.Kind] }).ToArray();
        switch (imageTokens)
        {
            case 1:
                return lm.Embed(tensor(words3, [scenes.Count, 3])).sum(1).MoveToOuterDisposeScope();
            case 4:
                var ids = new long[scenes.Count * 4];
                for (int i = 0; i < scenes.Count; i++)
                {
                    ids[i * 4] = ImageMarker;
                    Array.Copy(words3, i * 3, ids, i * 4 + 1, 3);
                }
                return lm.Embed(tensor(ids)).MoveToOuterDisposeScope();
            default:
                throw new ArgumentOutOfRangeException(nameof(imageTokens), imageTokens, "The demo describes an image with 1 or 4 tokens (perceiver grid 1 or 2).");
        }
    }
}
