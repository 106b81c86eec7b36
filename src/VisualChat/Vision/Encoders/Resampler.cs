using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>
/// Qwen-VL's Resampler (<c>attn_pool</c>): n_queries learned queries cross-attend once over the patch tokens.
/// kv = ln_kv(kv_proj(x)); out = attn(ln_q(query) + pos_embed, kv + get_abs_pos(pos_embed, L), kv).
/// <c>pos_embed</c> is the fixed 2-D sin-cos table of the query grid; the original stores it as an nn.Parameter with
/// requires_grad false, so it is part of state_dict() and of the checkpoints, and stays frozen here even when unfrozen.
/// <c>kv_proj</c> (bias-free) exists only when the patch width differs from the output width.
/// </summary>
public sealed class Resampler : nn.Module<Tensor, Tensor>
{
    private readonly Parameter pos_embed;
    private readonly Parameter query;
    private readonly Linear? kv_proj;
    private readonly PackedMultiheadAttention attn;
    private readonly LayerNorm ln_q;
    private readonly LayerNorm ln_kv;

    public Resampler(int gridSize, int embedDim, int numHeads, int kvDim, double layerNormEps, string name = "attn_pool") : base(name)
    {
        NumQueries = gridSize * gridSize;
        pos_embed = new Parameter(VisionPositionalEmbeddings.Get2dSinCos(embedDim, gridSize), requires_grad: false);
        query = new Parameter(nn.init.trunc_normal_(empty(NumQueries, embedDim), std: 0.02));
        kv_proj = kvDim != embedDim ? nn.Linear(kvDim, embedDim, hasBias: false) : null;
        attn = new PackedMultiheadAttention(embedDim, numHeads);
        ln_q = nn.LayerNorm(embedDim, layerNormEps);
        ln_kv = nn.LayerNorm(embedDim, layerNormEps);
        RegisterComponents();
    }

    public int NumQueries { get; }

    /// <summary>x: [N, L, kvDim] patch tokens → [N, NumQueries, embedDim].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var keyPositions = VisionPositionalEmbeddings.GetAbsPos(pos_embed, x.shape[1]);
        var kv = ln_kv.forward(kv_proj is null ? x : kv_proj.forward(x));
        var queries = ln_q.forward(query).add(pos_embed, TorchScalars.One).unsqueeze(0).expand(x.shape[0], -1, -1);
        return attn.forward(queries, kv.add(keyPositions, TorchScalars.One), kv).MoveToOuterDisposeScope();
    }
}
