using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>
/// Qwen-VL's VisualAttention (self-attention only). Unlike nn.MultiheadAttention, <c>in_proj</c>'s 3E outputs are
/// grouped per head: the output is viewed as [.., heads, 3·head_dim] and each head's slice splits into q, k, v
/// (Megatron layout). Scores are (q/√head_dim)·kᵀ, softmax, then <c>out_proj</c>.
/// </summary>
public sealed class QwenVisualAttention : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> in_proj;   // module-typed so LoRA can wrap it
    private readonly nn.Module<Tensor, Tensor> out_proj;   // module-typed so LoRA can wrap it
    private readonly int numHeads;
    private readonly int headDim;
    private readonly Scalar normFactor;   // held: a temporary Scalar may be finalized during the native call

    public QwenVisualAttention(int embedDim, int numHeads, string name = "attn") : base(name)
    {
        if (numHeads <= 0 || embedDim % numHeads != 0)
            throw new ArgumentException($"width {embedDim} is not divisible by {numHeads} heads.", nameof(numHeads));
        this.numHeads = numHeads;
        headDim = embedDim / numHeads;
        normFactor = Math.Sqrt(headDim).ToScalar();
        in_proj = nn.Linear(embedDim, 3L * embedDim);
        out_proj = nn.Linear(embedDim, embedDim);
        RegisterComponents();
    }

    /// <summary>x: [N, S, E] (batch-first; the original runs sequence-first, which does not change the math).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (batch, length, width) = (x.shape[0], x.shape[1], x.shape[2]);
        var perHead = in_proj.forward(x).view(batch, length, numHeads, 3L * headDim);
        var parts = perHead.split(headDim, -1);
        var query = parts[0].transpose(1, 2).div(normFactor);
        var key = parts[1].transpose(1, 2);
        var value = parts[2].transpose(1, 2);
        var probabilities = query.matmul(key.transpose(-2, -1)).softmax(-1);
        var context = probabilities.matmul(value).transpose(1, 2).reshape(batch, length, width);
        return out_proj.forward(context).MoveToOuterDisposeScope();
    }
}
