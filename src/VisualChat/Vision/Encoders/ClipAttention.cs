using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>HF <c>CLIPAttention</c>: separate q/k/v/out projections with biases, bidirectional softmax attention.</summary>
public sealed class ClipAttention : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> k_proj;   // module-typed so LoRA can wrap it
    private readonly nn.Module<Tensor, Tensor> v_proj;   // module-typed so LoRA can wrap it
    private readonly nn.Module<Tensor, Tensor> q_proj;   // module-typed so LoRA can wrap it
    private readonly nn.Module<Tensor, Tensor> out_proj;   // module-typed so LoRA can wrap it
    private readonly int numHeads;
    private readonly int headDim;
    private readonly Scalar scale;   // held: a temporary Scalar may be finalized during the native call

    public ClipAttention(int hiddenSize, int numHeads, string name = "self_attn") : base(name)
    {
        if (hiddenSize % numHeads != 0)
            throw new ArgumentException($"hidden size {hiddenSize} is not divisible by {numHeads} heads.", nameof(numHeads));
        this.numHeads = numHeads;
        headDim = hiddenSize / numHeads;
        scale = (1.0 / Math.Sqrt(headDim)).ToScalar();
        k_proj = nn.Linear(hiddenSize, hiddenSize);
        v_proj = nn.Linear(hiddenSize, hiddenSize);
        q_proj = nn.Linear(hiddenSize, hiddenSize);
        out_proj = nn.Linear(hiddenSize, hiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var (batch, length, width) = (hiddenStates.shape[0], hiddenStates.shape[1], hiddenStates.shape[2]);
        var query = SplitHeads(q_proj.forward(hiddenStates).mul(scale), batch, length);
        var key = SplitHeads(k_proj.forward(hiddenStates), batch, length);
        var value = SplitHeads(v_proj.forward(hiddenStates), batch, length);
        var weights = query.matmul(key.transpose(-2, -1)).softmax(-1);
        var context = weights.matmul(value).transpose(1, 2).reshape(batch, length, width);
        return out_proj.forward(context).MoveToOuterDisposeScope();
    }

    private Tensor SplitHeads(Tensor x, long batch, long length) =>
        x.view(batch, length, numHeads, headDim).transpose(1, 2);
}
