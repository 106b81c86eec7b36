using VisualChat.Conversations;
using VisualChat.Data.Synthetic;
using VisualChat.Text;

namespace VisualChat.Demo;

/// <summary>
/// A small byte-fallback BPE tokenizer learned from the demo's own template text. Merges never cross a newline, so the
/// template's prompt/answer boundary ("### Answer:\n" + answer) stays a token boundary, and every word the image
/// descriptions use (counts, colours, shape names, each with a leading "▁") is a single piece.
/// </summary>
public static class DemoTokenizer
{
    const char Space = '▁';

    /// <summary>Pieces the image descriptions are built from; each must be one token.</summary>
    public static IEnumerable<string> DescriptionWords() =>
        Enumerable.Range(1, 4).Select(i => i.ToString())
            .Concat(Enum.GetValues<ShapeColor>().Select(ShapeScene.Name))
            .Concat(Enum.GetValues<ShapeKind>().Select(ShapeScene.Name));

    /// <summary>Learns <paramref name="merges"/> merges from <paramref name="corpus"/> and adds &lt;image&gt;.</summary>
    public static SentencePieceTokenizer Build(IEnumerable<string> corpus, int merges)
    {
        // Segment frequencies: normalized like SentencePiece (dummy prefix, spaces as ▁), split at newlines.
        var segments = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var text in corpus)
        {
            bool first = true;
            // <image> is an added token: the tokenizer splits text at it, so BPE must not learn it (or pieces across
            // it); it then gets the id after the pieces, as the model folder's added token.
            foreach (var line in text.Replace(ConversationTemplate.ImagePlaceholder, "\n").Split('\n'))
            {
                var normalized = ((first ? " " : "") + line).Replace(' ', Space);
                first = false;
                if (normalized.Length < 2) continue;
                segments[normalized] = segments.GetValueOrDefault(normalized) + 1;
            }
        }
        var words = segments.Select(kv => (Symbols: kv.Key.Select(c => c.ToString()).ToList(), Count: kv.Value)).ToList();
        var learned = new List<string>();
        var known = new HashSet<string>(StringComparer.Ordinal);
        for (int m = 0; m < merges; m++)
        {
            var pairs = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in words)
            {
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    var pair = (symbols[i], symbols[i + 1]);
                    pairs[pair] = pairs.GetValueOrDefault(pair) + count;
                }
            }

            if (pairs.Count == 0) break;
            // Deterministic: highest frequency, then ordinal order of the merged string.
            var best = pairs.OrderByDescending(p => p.Value).ThenBy(p => p.Key.Item1 + p.Key.Item2, StringComparer.Ordinal).First();
            if (best.Value < 2) break;
            var merged = best.Key.Item1 + best.Key.Item2;
            if (known.Add(merged)) learned.Add(merged);
            foreach (var (symbols, _) in words)
            {
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    if (symbols[i] == best.Key.Item1 && symbols[i + 1] == best.Key.Item2)
                    {
                        symbols[i] = merged;
                        symbols.RemoveAt(i + 1);
                    }
                }
            }
        }
        // Single characters first (so no character needs byte fallback), then merges in learned order, then the
        // description words (lowest priority: they only have to exist as pieces).
        var characters = segments.Keys.SelectMany(s => s).Distinct().Select(c => c.ToString()).OrderBy(c => c, StringComparer.Ordinal);
        var vocabulary = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var piece in characters.Concat(learned).Concat(DescriptionWords().Select(w => Space + w)))
            if (seen.Add(piece)) vocabulary.Add(piece);
        var tokenizer = SentencePieceTokenizer.FromModel(SentencePieceModelBuilder.CreateByteFallbackBpe(vocabulary), "demo BPE");
        tokenizer.AddSpecialTokens([ConversationTemplate.ImagePlaceholder]);
        return tokenizer;
    }

    /// <summary>The single id of a description word ("3", "red", "circle").</summary>
    public static int WordId(SentencePieceTokenizer tokenizer, string word) =>
        tokenizer.TokenToId(Space + word)
        ?? throw new InvalidOperationException($"The demo tokenizer has no piece '{Space}{word}'; it must be built by DemoTokenizer.Build.");
}
