using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision;

/// <summary>
/// torch.nn.MultiheadAttention with PyTorch's parameter names (<c>in_proj_weight</c> [3E, E] = q;k;v row blocks,
/// <c>in_proj_bias</c> [3E], <c>out_proj.weight</c>, <c>out_proj.bias</c>), batch-first here: query [N, Q, E],
/// key/value [N, L, E] → [N, Q, E]. Heads take contiguous E/H slices of each of q, k, v.
/// </summary>
public sealed class PackedMultiheadAttention : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    private readonly Parameter in_proj_weight;
    private readonly Parameter in_proj_bias;
    private readonly Linear out_proj;
    private readonly int embedDim;
    private readonly int numHeads;
    private readonly Scalar scale;   // held: a temporary Scalar may be finalized during the native call

    public PackedMultiheadAttention(int embedDim, int numHeads, string name = "attn") : base(name)
    {
        if (numHeads <= 0 || embedDim % numHeads != 0)
            throw new ArgumentException($"embed dim {embedDim} is not divisible by {numHeads} heads.", nameof(numHeads));
        this.embedDim = embedDim;
        this.numHeads = numHeads;
        scale = (1.0 / Math.Sqrt(embedDim / numHeads)).ToScalar();
        in_proj_weight = new Parameter(empty(3L * embedDim, embedDim));
        in_proj_bias = new Parameter(zeros(3L * embedDim));
        out_proj = nn.Linear(embedDim, embedDim);
        nn.init.xavier_uniform_(in_proj_weight);
        nn.init.constant_(out_proj.bias!, TorchScalars.Zero);
        RegisterComponents();
    }

    public int NumHeads => numHeads;

    /// <summary>nn.MultiheadAttention's init drawn from <paramref name="generator"/>: xavier_uniform in_proj_weight,
    /// zero in_proj_bias, out_proj weight as a default Linear and zero out_proj bias.</summary>
    internal void ResetParameters(Generator generator)
    {
        GeneratorInit.Uniform(in_proj_weight, Math.Sqrt(6.0 / (embedDim + 3.0 * embedDim)), generator);
        GeneratorInit.Linear(out_proj, generator);
        using var noGrad = no_grad();
        in_proj_bias.zero_();
        out_proj.bias!.zero_();
    }

    public override Tensor forward(Tensor query, Tensor key, Tensor value)
    {
        using var scope = NewDisposeScope();
        var headDim = embedDim / numHeads;
        var weights = in_proj_weight.chunk(3, 0);
        var biases = in_proj_bias.chunk(3, 0);
        var q = Heads(nn.functional.linear(query, weights[0], biases[0]), headDim).mul(scale);
        var k = Heads(nn.functional.linear(key, weights[1], biases[1]), headDim);
        var v = Heads(nn.functional.linear(value, weights[2], biases[2]), headDim);
        var context = q.matmul(k.transpose(-2, -1)).softmax(-1).matmul(v);
        var merged = context.transpose(1, 2).reshape(query.shape[0], query.shape[1], embedDim);
        return out_proj.forward(merged).MoveToOuterDisposeScope();
    }

    private Tensor Heads(Tensor x, int headDim) => x.view(x.shape[0], x.shape[1], numHeads, headDim).transpose(1, 2);
}
