using VisualChat.Text;

namespace VisualChat.Model.Presets;

/// <summary>
/// The tokenizer of the tiny presets: a LLaMA-style byte-fallback BPE (&lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, 256 byte pieces,
/// the characters of a small built-in English text, then merges learned from it by plain BPE). Deterministic: ties in
/// pair frequency are broken by the pair's text, so the same build always gives the same ids.
/// </summary>
public static class TinyTokenizer
{
    /// <summary>Merges learned from <see cref="TrainingText"/>; the vocabulary is 259 + characters + merges.</summary>
    public const int DefaultMerges = 256;

    /// <summary>Short plain English, enough to learn common words and word pieces.</summary>
    public const string TrainingText =
        "The quick brown fox jumps over the lazy dog. A picture shows a cat sitting on a red chair next to the window. " +
        "There are two dogs playing in the park, and the children are watching them. What is in the image? " +
        "The image shows a small house with a green door and a large tree in the garden. " +
        "Please describe the first picture and then compare it with the second one. " +
        "The man is holding an umbrella because it is raining outside. The woman is reading a book at the table. " +
        "This is a photo of a city street with cars, people and tall buildings. How many people can you see? " +
        "I can see three people walking on the street and one person riding a bicycle. " +
        "The weather is sunny and the sky is blue. The train arrives at the station in the morning. " +
        "Answer the question about the images. The first image has a bird and the second image has a boat on the water. " +
        "They are both outside, but the bird is flying and the boat is floating. Thank you for the answer. " +
        "The students are learning to read and write in the classroom with their teacher. " +
        "She bought apples, bread and milk at the market, then she walked home with her friend.";

    /// <summary>A tokenizer with <paramref name="merges"/> learned merges (fewer when every word of the text is already one piece).</summary>
    public static SentencePieceTokenizer Build(int merges = DefaultMerges) =>
        SentencePieceTokenizer.FromModel(BuildModel(merges), "tiny preset tokenizer");

    public static SentencePieceModel BuildModel(int merges = DefaultMerges)
    {
        var words = TrainingText.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .GroupBy(w => "▁" + w, StringComparer.Ordinal)
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => (Symbols: g.Key.Select(c => c.ToString()).ToList(), Count: g.Count()))
            .ToList();
        var characters = words.SelectMany(w => w.Symbols).Distinct(StringComparer.Ordinal).OrderBy(c => c, StringComparer.Ordinal).ToList();

        var learned = new List<string>();
        var known = new HashSet<string>(characters, StringComparer.Ordinal);
        while (learned.Count < merges) {
            var counts = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in words)
            {
                for (int i = 0; i + 1 < symbols.Count; i++) {
                    var pair = (symbols[i], symbols[i + 1]);
                    counts[pair] = counts.GetValueOrDefault(pair) + count;
                }
            }

            var best = counts.Where(p => !known.Contains(p.Key.Item1 + p.Key.Item2))
                .OrderByDescending(p => p.Value)
                .ThenBy(p => p.Key.Item1 + "\u0001" + p.Key.Item2, StringComparer.Ordinal)
                .Select(p => p.Key).FirstOrDefault();
            if (best == default) break;
            string merged = best.Item1 + best.Item2;
            learned.Add(merged);
            known.Add(merged);
            foreach (var (symbols, _) in words)
            {
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    if (symbols[i] == best.Item1 && symbols[i + 1] == best.Item2) {
                        symbols[i] = merged;
                        symbols.RemoveAt(i + 1);
                    }
                }
            }
        }
        // Merged pieces score by merge order (earlier = higher); single characters are never produced by a merge, so
        // their score only has to stay below every merge.
        var vocabulary = learned.Select((piece, index) => (piece, -(float)index))
            .Concat(characters.Select(c => (c, -1000f)));
        return SentencePieceModelBuilder.CreateByteFallbackBpe(vocabulary);
    }
}
