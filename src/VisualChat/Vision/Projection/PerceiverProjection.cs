using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Vision.Projection;

/// <summary>
/// DSVC "perceiver" (VisProjection_perceiver): grid² learned queries (256 by default) cross-attend once over the
/// encoder's patch tokens and become exactly grid² LM embeddings, whatever the image size (CLIP-L/14 224: 257 in →
/// 256 out; 336: 577 in → 256 out). Like DSVC it drops the first token as CLS and sizes the key positions from the
/// token count including CLS, so it expects CLS + a square patch grid (CLIP encoders, not the Qwen resampler output).
/// Keys: <c>pos_embed</c> (fixed 2-D sin-cos, frozen), <c>query</c>, <c>kv_proj.{weight,bias}</c>,
/// <c>attn.in_proj_weight</c>, <c>attn.in_proj_bias</c>, <c>attn.out_proj.*</c>, <c>ln_q.*</c>, <c>ln_kv.*</c>,
/// <c>projection.0.*</c> (LayerNorm) and <c>projection.1.*</c> (Linear). LayerNorm eps 1e-12 throughout.
/// </summary>
public sealed class PerceiverProjection : nn.Module<Tensor, Tensor>, IProjection
{
    private readonly Parameter pos_embed;
    private readonly Parameter query;
    private readonly Linear kv_proj;
    private readonly PackedMultiheadAttention attn;
    private readonly LayerNorm ln_q;
    private readonly LayerNorm ln_kv;
    private readonly Sequential projection;

    public PerceiverProjection(int visionWidth, int lmWidth, int gridSize = 16, int? numHeads = null, string name = "projection", Generator? generator = null)
        : base(name)
    {
        var heads = numHeads ?? lmWidth / 128;
        if (heads <= 0 || lmWidth % heads != 0)
        {
            throw new ArgumentException(
                $"perceiver projection: LM width {lmWidth} needs a positive head count dividing it (got {heads}); set PerceiverHeads.",
                nameof(numHeads));
        }

        InputWidth = visionWidth;
        OutputWidth = lmWidth;
        NumQueries = gridSize * gridSize;
        pos_embed = new Parameter(VisionPositionalEmbeddings.Get2dSinCos(lmWidth, gridSize), requires_grad: false);
        query = new Parameter(empty(NumQueries, lmWidth));
        kv_proj = nn.Linear(visionWidth, lmWidth);
        attn = new PackedMultiheadAttention(lmWidth, heads);
        ln_q = nn.LayerNorm(lmWidth, 1e-12);
        ln_kv = nn.LayerNorm(lmWidth, 1e-12);
        projection = nn.Sequential(("0", nn.LayerNorm(lmWidth, 1e-12)), ("1", nn.Linear(lmWidth, lmWidth)));
        RegisterComponents();
        // DSVC's _init_weights: trunc_normal(0.02) queries and Linear weights, zero Linear biases, LayerNorms 1 and 0;
        // the attention keeps nn.MultiheadAttention's init (xavier_uniform in_proj, zero in_proj bias, default out_proj
        // weight with zero bias). All drawn from the generator.
        using var owned = generator is null ? GeneratorInit.Create(null) : null;
        var g = generator ?? owned!;
        using (no_grad())
        {
            GeneratorInit.TruncatedNormal(query, 0.02, g);
            foreach (var linear in new[] { kv_proj, (Linear)projection[1] })
            {
                GeneratorInit.TruncatedNormal(linear.weight!, 0.02, g);
                linear.bias!.zero_();
            }
            attn.ResetParameters(g);
            foreach (var norm in new[] { ln_q, ln_kv, (LayerNorm)projection[0] })
            {
                norm.weight!.fill_(TorchScalars.One);
                norm.bias!.zero_();
            }
        }
    }

    public ProjectionKind Kind => ProjectionKind.Perceiver;
    public int InputWidth { get; }
    public int OutputWidth { get; }
    public int NumQueries { get; }

    public int OutputTokens(int inputTokens)
    {
        var keyGrid = (int)Math.Sqrt(inputTokens);
        if (keyGrid * keyGrid != inputTokens - 1)
        {
            throw new ArgumentException(
                $"perceiver projection takes CLS + a square patch grid; {inputTokens} tokens is not 1 + n².", nameof(inputTokens));
        }

        return NumQueries;
    }

    public override Tensor forward(Tensor visionFeatures)
    {
        OutputTokens((int)visionFeatures.shape[1]);
        using var scope = NewDisposeScope();
        var keyPositions = VisionPositionalEmbeddings.GetAbsPos(pos_embed, visionFeatures.shape[1]);
        var patches = visionFeatures.narrow(1, 1, visionFeatures.shape[1] - 1);
        var kv = ln_kv.forward(kv_proj.forward(patches));
        var queries = ln_q.forward(query).add(pos_embed, TorchScalars.One).unsqueeze(0).expand(visionFeatures.shape[0], -1, -1);
        var attended = attn.forward(queries, kv.add(keyPositions, TorchScalars.One), kv);
        return projection.forward(attended).MoveToOuterDisposeScope();
    }

    public Tensor Project(Tensor visionFeatures) => forward(visionFeatures);
}
