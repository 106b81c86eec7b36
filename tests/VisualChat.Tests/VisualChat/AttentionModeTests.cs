using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Attention;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Multimodal;

/// <summary>
/// Who attends to whom in each attention mode. Queries are zero, so a query spreads its weight evenly over the keys
/// it may see; values are one-hot by key position, so the output row lists exactly those keys.
/// </summary>
public class AttentionModeTests
{
    const long P = (long)TokenModality.Padding, T = (long)TokenModality.Text, I = (long)TokenModality.Image;
    // Row 1 has padding at the start and in the middle: those keys must never receive weight.
    static readonly long[][] Layout = [[T, I, I, T, T, I, T, P], [P, I, T, T, P, I, T, T]];
    const int L = 8;

    static (Tensor q, Tensor k, Tensor v, AttentionContext context) Inputs(int headDim)
    {
        var modality = tensor(Layout.SelectMany(r => r).ToArray(), new long[] { 2, L });
        var q = zeros(2, 1, L, headDim);
        var k = randn(2, 1, L, headDim);
        var v = zeros(2, 1, L, headDim);
        for (int j = 0; j < L; j++) v[.., 0, j, j] = tensor(1f);
        var context = new AttentionContext {
            QueryPositions = arange(L).unsqueeze(0).expand(2, L), KeyPaddingMask = modality.ne(P), PastLength = 0, QueryLength = L, TokenModality = modality,
        };
        return (q, k, v, context);
    }

    static AttentionContext WithExtension(AttentionContext context, IAttentionExtension? extension) => new() {
        QueryPositions = context.QueryPositions, KeyPaddingMask = context.KeyPaddingMask, PastLength = context.PastLength,
        QueryLength = context.QueryLength, TokenModality = context.TokenModality, Extension = extension,
    };

    /// <summary>Uniform weights over <paramref name="keys"/> (one-hot dims 0..L-1).</summary>
    static float[] Uniform(IEnumerable<int> keys, int width, float scale = 1f, int offset = 0)
    {
        var row = new float[width];
        var list = keys.ToList();
        foreach (var key in list) row[offset + key] += scale / list.Count;
        return row;
    }

    static void AssertRow(Tensor output, int b, int i, float[] expected, string what)
    {
        var actual = output[b, 0, i].data<float>().ToArray();
        for (int d = 0; d < expected.Length; d++)
            Assert.True(Math.Abs(actual[d] - expected[d]) < 1e-5, $"{what}: row {b} query {i} dim {d}: expected {expected[d]}, got {actual[d]}");
    }

    [Fact]
    public void CausalSeesEveryEarlierRealTokenWhateverItsModality()
    {
        using var scope = NewDisposeScope();
        var (q, k, v, context) = Inputs(L);
        using var _ = context;
        CausalAttentionKernel.Instance.Prepare(context);
        var output = CausalAttentionKernel.Instance.Attend(q, k, v, 0, context);
        for (int b = 0; b < 2; b++)
        {
            for (int i = 0; i < L; i++)
            {
                if (Layout[b][i] != P)
                    AssertRow(output, b, i, Uniform(Enumerable.Range(0, i + 1).Where(j => Layout[b][j] != P), L), "causal");
            }
        }
    }

    [Fact]
    public void MmcaTextSeesTextAndEarlierImagesInTwoSoftmaxesImagesSeeThemselves()
    {
        using var scope = NewDisposeScope();
        var (q, k, v, context) = Inputs(L);
        var kernel = MmcaAttentionKernel.Instance;
        kernel.Prepare(context);
        var plan = Assert.IsType<MmcaPlan>(context.KernelState);
        var output = kernel.Attend(q, k, v, 0, context);
        context.Dispose();
        Assert.True(plan.TextQueryRows.IsInvalid, "disposing the forward's context frees the plan");
        for (int b = 0; b < 2; b++)
        {
            for (int i = 0; i < L; i++) {
                float[] expected;
                if (Layout[b][i] == T) {
                    var text = Uniform(Enumerable.Range(0, i + 1).Where(j => Layout[b][j] == T), L);
                    var images = Enumerable.Range(0, i).Where(j => Layout[b][j] == I).ToList();
                    var image = images.Count == 0 ? new float[L] : Uniform(images, L);
                    expected = text.Zip(image, (x, y) => x + y).ToArray();
                } else if (Layout[b][i] == I)
                {
                    expected = Uniform([i], L);
                }
                else
                {
                    expected = new float[L];
                }

                AssertRow(output, b, i, expected, "mmca");
            }
        }
        // row 0, query 0: text before any image gets nothing from the image branch
        AssertRow(output, 0, 0, Uniform([0], L), "text before images");
    }

    [Fact]
    public void CausalCrossAddsGatedAttentionFromTextToEarlierImageTokensOnly()
    {
        using var scope = NewDisposeScope();
        // Memory: the image tokens of each row (slots), plus one unused entry in row 1 that must never be attended.
        long[][] slots = [[1, 2, 5, CrossAttentionMemory.UnusedSlot], [1, 5, CrossAttentionMemory.UnusedSlot, CrossAttentionMemory.UnusedSlot]];
        const int M = 4, width = L + M;
        var (q, k, v, context) = Inputs(width);
        var memory = zeros(2, M, width);
        for (int m = 0; m < M; m++) memory[.., m, L + m] = tensor(1f);
        var layer = new GatedCrossAttention(width, 1, width);
        using (no_grad()) {
            layer.q_proj.Weight().zero_();
            layer.k_proj.Weight().zero_();
            layer.v_proj.Weight().copy_(eye(width));
            layer.o_proj.Weight().copy_(eye(width));
            layer.attn_gate.fill_(Math.Atanh(0.5));
        }
        var kernel = new CausalCrossAttentionKernel(new ModuleList<GatedCrossAttention>(layer));
        var crossMemory = new CrossAttentionMemory(memory, tensor(slots.SelectMany(s => s).ToArray(), new long[] { 2, M }));
        context = WithExtension(context, crossMemory);
        kernel.Prepare(context);
        var output = kernel.Attend(q, k, v, 0, context);
        context.Dispose();
        for (int b = 0; b < 2; b++)
        {
            for (int i = 0; i < L; i++) {
                if (Layout[b][i] == P) continue;
                var expected = Uniform(Enumerable.Range(0, i + 1).Where(j => Layout[b][j] != P), width);
                var earlier = Enumerable.Range(0, M).Where(m => slots[b][m] < i).ToList();
                if (Layout[b][i] == T && earlier.Count > 0)
                    expected = expected.Zip(Uniform(earlier, width, 0.5f, L), (x, y) => x + y).ToArray();
                AssertRow(output, b, i, expected, "causal+cross");
            }
        }

        // closed gate: exactly the causal kernel
        using (no_grad()) layer.attn_gate.zero_();
        using var closedContext = WithExtension(context, crossMemory);
        kernel.Prepare(closedContext);
        var closed = kernel.Attend(q, k, v, 0, closedContext);
        using var causalContext = WithExtension(context, null);
        CausalAttentionKernel.Instance.Prepare(causalContext);
        Assert.Equal(0f, (closed - CausalAttentionKernel.Instance.Attend(q, k, v, 0, causalContext)).abs().max().item<float>());
        // the layer index picks the layer: there is one, so layer 1 has none
        Assert.Throws<ArgumentOutOfRangeException>(() => kernel.Attend(q, k, v, 1, closedContext));
    }
}
