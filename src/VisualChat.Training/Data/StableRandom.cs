using System.Text;

namespace VisualChat.Data;

/// <summary>A small seeded RNG (SplitMix64) whose streams are derived by hashing (seed, labels...), so every data set,
/// record and epoch gets its own reproducible stream independent of thread count and processing order.</summary>
public sealed class StableRandom
{
    private ulong _state;

    public StableRandom(ulong seed) => _state = seed;

    /// <summary>A stream for the given seed and labels (e.g. data set name, record id, purpose).</summary>
    public static StableRandom For(long seed, params object[] labels) => new(Hash(seed, labels));

    public static ulong Hash(long seed, params object[] labels)
    {
        ulong h = Mix((ulong)seed ^ 0x9E3779B97F4A7C15UL);
        foreach (var label in labels)
        {
            var text = label switch
            {
                string s => s,
                IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
                _ => label.ToString() ?? "",
            };
            h = Mix(h ^ Fnv1a(text));
            h = Mix(h + 0x632BE59BD9B4E019UL);
        }
        return h;
    }

    /// <summary>A uniform number in [0, 1) derived from the hash of (seed, labels).</summary>
    public static double UnitHash(long seed, params object[] labels) => (Hash(seed, labels) >> 11) * (1.0 / (1UL << 53));

    public ulong NextUInt64()
    {
        _state += 0x9E3779B97F4A7C15UL;
        return Mix(_state);
    }

    /// <summary>Uniform integer in [0, maxExclusive).</summary>
    public int Next(int maxExclusive)
    {
        if (maxExclusive <= 0) throw new ArgumentOutOfRangeException(nameof(maxExclusive), maxExclusive, "must be positive");
        // Rejection sampling keeps the distribution exactly uniform.
        ulong bound = (ulong)maxExclusive;
        ulong limit = ulong.MaxValue - ulong.MaxValue % bound;
        ulong x;
        do x = NextUInt64(); while (x >= limit);
        return (int)(x % bound);
    }

    /// <summary>Uniform integer in [minInclusive, maxInclusive].</summary>
    public int NextInclusive(int minInclusive, int maxInclusive) => minInclusive + Next(maxInclusive - minInclusive + 1);

    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    public T Choose<T>(IReadOnlyList<T> items) => items[Next(items.Count)];

    /// <summary>Fisher–Yates shuffle in place.</summary>
    public void Shuffle<T>(IList<T> items)
    {
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = Next(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    /// <summary><paramref name="count"/> distinct indices from [0, n) in random order.</summary>
    public int[] Sample(int n, int count)
    {
        var all = Enumerable.Range(0, n).ToArray();
        Shuffle(all);
        return all.Take(count).ToArray();
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static ulong Fnv1a(string text)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (var b in Encoding.UTF8.GetBytes(text))
        {
            h ^= b;
            h *= 0x100000001B3UL;
        }
        return h;
    }
}
