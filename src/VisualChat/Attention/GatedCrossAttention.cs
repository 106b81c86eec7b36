using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Attention;

/// <summary>
/// One layer's Flamingo-style gated cross-attention, living inside the attention kernel of the <c>causal+cross</c>
/// mode: its queries are the layer's own self-attention queries (q [B, H, Lq, Dh], merged to [B, Lq, H·Dh]), its keys
/// and values are the projected image token embeddings (the LM's input embeddings at image positions — layer
/// independent, so a KV cache needs nothing extra), and its result is added, scaled by tanh(<c>attn_gate</c>), to the
/// self-attention output before the layer's o_proj. The gate starts at 0, so an untrained model is exactly the LM.
/// </summary>
public sealed class GatedCrossAttention : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    readonly int numHeads;
    readonly int headDim;
    public readonly Linear q_proj;
    public readonly Linear k_proj;
    public readonly Linear v_proj;
    public readonly Linear o_proj;
    public readonly Parameter attn_gate;

    /// <param name="generator">Draws the projections' initial weights (PyTorch's Linear default); null uses a generator
    /// seeded from one draw of libtorch's.</param>
    public GatedCrossAttention(int memoryWidth, int numHeads, int headDim, Generator? generator = null) : base(nameof(GatedCrossAttention))
    {
        this.numHeads = numHeads;
        this.headDim = headDim;
        int width = numHeads * headDim;
        q_proj = nn.Linear(width, width, hasBias: false);
        k_proj = nn.Linear(memoryWidth, width, hasBias: false);
        v_proj = nn.Linear(memoryWidth, width, hasBias: false);
        o_proj = nn.Linear(width, width, hasBias: false);
        attn_gate = new Parameter(zeros(1));
        RegisterComponents();
        using var owned = generator is null ? GeneratorInit.Create(null) : null;
        foreach (var linear in new[] { q_proj, k_proj, v_proj, o_proj }) GeneratorInit.Linear(linear, generator ?? owned!);
    }

    /// <param name="query">[B, H, Lq, Dh] self-attention queries.</param>
    /// <param name="memory">[B, M, memoryWidth] image token embeddings.</param>
    /// <param name="mask">[B, 1, Lq, M] bool (true = may attend); rows without any key are fully open and zeroed by the caller's factor.</param>
    /// <returns>[B, H, Lq, Dh] gated contribution.</returns>
    public override Tensor forward(Tensor query, Tensor memory, Tensor mask)
    {
        using var scope = NewDisposeScope();
        long batch = query.shape[0], length = query.shape[2], slots = memory.shape[1];
        var merged = query.transpose(1, 2).reshape(batch, length, numHeads * headDim);
        var q = q_proj.forward(merged).view(batch, length, numHeads, headDim).transpose(1, 2);
        var k = k_proj.forward(memory).view(batch, slots, numHeads, headDim).transpose(1, 2);
        var v = v_proj.forward(memory).view(batch, slots, numHeads, headDim).transpose(1, 2);
        var attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
        var output = o_proj.forward(attended.transpose(1, 2).reshape(batch, length, numHeads * headDim))
            .view(batch, length, numHeads, headDim).transpose(1, 2);
        return (output * attn_gate.tanh()).MoveToOuterDisposeScope();
    }
}
