using TorchSharp;
using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Tests.Attention;

public class MmcaTests
{
    const long P = (long)TokenModality.Padding, T = (long)TokenModality.Text, I = (long)TokenModality.Image;

    static Tensor DenseReference(Tensor q, Tensor k, Tensor v, Tensor keyModality) =>
        DenseMultiModalCausalAttention.Attend(q, k, v, keyModality);

    static Tensor Modality(params long[][] rows) => tensor(rows.SelectMany(r => r).ToArray()).view(rows.Length, rows[0].Length);

    static long[] Run(params (long kind, int count)[] parts) => parts.SelectMany(p => Enumerable.Repeat(p.kind, p.count)).ToArray();

    public static IEnumerable<object[]> Layouts() => new[]
    {
        // images in the middle and at the end, trailing padding; images at the start with left padding
        new object[] { "middle+end", new[] { Run((T, 3), (I, 4), (T, 5), (I, 4), (T, 6), (P, 2)), Run((P, 3), (I, 4), (T, 8), (I, 3), (T, 6)) } },
        new object[] { "start+end", new[] { Run((I, 5), (T, 9), (I, 6), (T, 4)), Run((T, 20), (I, 4)) } },
        new object[] { "text-only+image-only", new[] { Run((T, 24)), Run((I, 8), (I, 8), (P, 8)) } },
        new object[] { "many-images", new[] { Run((T, 2), (I, 2), (T, 1), (I, 2), (T, 1), (I, 2), (T, 3), (I, 2), (T, 4), (I, 2), (T, 3)), Run((P, 1), (T, 1), (I, 3), (T, 1), (I, 3), (T, 15)) } },
    };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void EfficientEqualsDenseForwardAndBackward(string name, long[][] layout)
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        var modality = Modality(layout);
        long b = modality.shape[0], l = modality.shape[1];
        var q = randn(b, 4, l, 8, requires_grad: true);
        var k = randn(b, 2, l, 8, requires_grad: true);
        var v = randn(b, 2, l, 8, requires_grad: true);
        var upstream = randn(b, 4, l, 8);

        using var plan = new MmcaPlan(modality, l);
        var fast = MultiModalCausalAttention.Attend(q, k, v, plan);
        var fastGrads = autograd.grad([(fast * upstream).sum()], [q, k, v]);
        var dense = DenseReference(q, k, v, modality);
        var denseGrads = autograd.grad([(dense * upstream).sum()], [q, k, v]);

        AssertClose(dense, fast, $"{name} forward");
        for (int i = 0; i < 3; i++)
            AssertClose(denseGrads[i], fastGrads[i], $"{name} grad {"qkv"[i]}");
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void CachedDecodingEqualsFullForward(string name, long[][] layout)
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var modality = Modality(layout);
        long b = modality.shape[0], l = modality.shape[1];
        var q = randn(b, 4, l, 8);
        var k = randn(b, 2, l, 8);
        var v = randn(b, 2, l, 8);
        using var fullPlan = new MmcaPlan(modality, l);
        var full = MultiModalCausalAttention.Attend(q, k, v, fullPlan);

        // Prefill a prefix, then feed the rest in chunks of 1 and 3 positions over the growing key prefix.
        long position = 9;
        foreach (var chunk in new long[] { 1, 3, 1, 5, l })
        {
            long end = Math.Min(l, position + chunk);
            if (position >= end) break;
            var keys = modality.narrow(1, 0, end);
            using var plan = new MmcaPlan(keys, end - position);
            var part = MultiModalCausalAttention.Attend(q.narrow(2, position, end - position), k.narrow(2, 0, end), v.narrow(2, 0, end), plan);
            AssertClose(full.narrow(2, position, end - position), part, $"{name} positions {position}..{end}");
            position = end;
        }
    }

    [Fact]
    public void WhoAttendsToWhomOnAHandWrittenCase()
    {
        // Sequence: t0 i1 i2 t3 t4 p5. Values are one-hot per position so each output row shows its attention weights.
        using var scope = NewDisposeScope();
        var modality = Modality(new[] { T, I, I, T, T, P });
        var q = zeros(1, 1, 6, 6);
        var k = zeros(1, 1, 6, 6);
        var v = eye(6).view(1, 1, 6, 6);
        using var plan = new MmcaPlan(modality, 6);
        var outRows = MultiModalCausalAttention.Attend(q, k, v, plan).view(6, 6);
        var expected = tensor(new float[,]
        {
            { 1, 0, 0, 0, 0, 0 },            // t0: only itself among text, no earlier image → image branch zero
            { 0, 1, 0, 0, 0, 0 },            // i1: itself
            { 0, 0, 1, 0, 0, 0 },            // i2: itself
            { 0.5f, 0.5f, 0.5f, 0.5f, 0, 0 },// t3: text {t0,t3} ½ each + images {i1,i2} ½ each
            { 1 / 3f, 0.5f, 0.5f, 1 / 3f, 1 / 3f, 0 }, // t4: text {t0,t3,t4} + images {i1,i2}
            { 0, 0, 0, 0, 0, 0 },            // padding: nothing
        });
        AssertClose(expected, outRows, "hand case");
    }

    static void AssertClose(Tensor expected, Tensor actual, string what, double tolerance = 1e-5)
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.False(actual.isnan().any().item<bool>(), $"{what}: NaN");
        double diff = (expected - actual).abs().max().item<float>();
        Assert.True(diff <= tolerance, $"{what}: max abs difference {diff:E3} > {tolerance:E0}");
    }

    [Fact]
    public void PlanRejectsShapesAndQueryLengthsItCannotServe()
    {
        using var flat = tensor(new long[] { T, I, T });
        Assert.Throws<ArgumentException>(() => new MmcaPlan(flat, 1));
        using var keys = Modality(Run((T, 2), (I, 2), (T, 2)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MmcaPlan(keys, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MmcaPlan(keys, 7));
        using var full = new MmcaPlan(keys, 6);
        Assert.Equal(1, full.Batch);
    }

    [Fact]
    public void DisposingAPlanFreesItsTensors()
    {
        using var keys = Modality(Run((T, 2), (I, 2), (T, 2)));
        var plan = new MmcaPlan(keys, 6);
        var owned = new[] { plan.TextQueryRows, plan.TextKeyRows, plan.QueryIsImage, plan.ImageKeyRows! };
        plan.Dispose();
        Assert.All(owned, t => Assert.True(t.IsInvalid));
    }
}
