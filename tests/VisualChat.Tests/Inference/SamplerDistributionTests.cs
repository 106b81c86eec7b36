using VisualChat.Inference;
using VisualChat.Inference.Generation;
using static TorchSharp.torch;

namespace VisualChat.Tests.Inference;

/// <summary>
/// Sampler.Sample must draw from softmax(filter(logits / T)): many draws with a fixed seed are compared against the
/// tempered, top-p-filtered distribution computed here in doubles, with a chi-square bound. Dropping the temperature
/// or the top-p step from Sample moves the frequencies far outside the bound (or samples filtered tokens).
/// </summary>
public class SamplerDistributionTests
{
    static readonly double[] Logits = { 2.0, 1.5, 1.0, 0.5, 0.0, -1.0 };
    const int Draws = 20000;
    // Chi-square critical value far in the tail for df ≤ 5 (p ≈ 1e-7): a correct sampler with a fixed seed stays
    // well below it, the mutants land in the thousands.
    const double ChiSquareBound = 40.0;

    /// <summary>Independent reference: tempered softmax, then HF top-p (keep the smallest most-likely set whose mass
    /// reaches p, at least one token), renormalised.</summary>
    static double[] Expected(double temperature, double topP)
    {
        var scaled = Logits.Select(l => l / temperature).ToArray();
        double max = scaled.Max();
        var weights = scaled.Select(s => Math.Exp(s - max)).ToArray();
        double sum = weights.Sum();
        var probabilities = weights.Select(w => w / sum).ToArray();
        var order = Enumerable.Range(0, Logits.Length).OrderByDescending(i => probabilities[i]).ToArray();
        var keep = new bool[Logits.Length];
        double mass = 0;
        foreach (var i in order)
        {
            keep[i] = true;
            mass += probabilities[i];
            if (mass >= topP) break;
        }
        double kept = Enumerable.Range(0, Logits.Length).Where(i => keep[i]).Sum(i => probabilities[i]);
        return Enumerable.Range(0, Logits.Length).Select(i => keep[i] ? probabilities[i] / kept : 0).ToArray();
    }

    static long[] Counts(double temperature, double topP)
    {
        using var scope = NewDisposeScope();
        using var sampler = new Sampler(new GenerationOptions { Temperature = temperature, TopP = topP, Seed = 7 });
        var logits = tensor(Logits.Select(l => (float)l).ToArray()).view(1, Logits.Length).repeat(Draws, 1);
        var seen = zeros(Draws, Logits.Length, dtype: ScalarType.Bool);
        var ids = sampler.Sample(logits, seen).data<long>().ToArray();
        var counts = new long[Logits.Length];
        foreach (var id in ids) counts[id]++;
        return counts;
    }

    [Theory]
    [InlineData(0.5, 1.0)]    // temperature alone
    [InlineData(1.0, 0.75)]   // top-p alone
    [InlineData(0.5, 0.9)]    // both: T = 0.5 keeps 3 tokens at p = 0.9, T = 1 would keep 4
    [InlineData(2.0, 0.8)]    // a flattening temperature
    public void SampledFrequencies_MatchTheTemperedTopPDistribution(double temperature, double topP)
    {
        var expected = Expected(temperature, topP);
        var counts = Counts(temperature, topP);
        double chiSquare = 0;
        for (int i = 0; i < Logits.Length; i++)
        {
            if (expected[i] == 0)
            {
                Assert.True(counts[i] == 0, $"token {i} is removed by top-p {topP} at temperature {temperature} but was drawn {counts[i]} times");
                continue;
            }
            double e = expected[i] * Draws;
            chiSquare += (counts[i] - e) * (counts[i] - e) / e;
        }
        Assert.True(chiSquare < ChiSquareBound,
            $"T={temperature}, top-p={topP}: chi-square {chiSquare:F1} ≥ {ChiSquareBound}; counts [{string.Join(", ", counts)}], " +
            $"expected [{string.Join(", ", expected.Select(p => (p * Draws).ToString("F0")))}]");
    }
}
