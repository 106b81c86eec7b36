using TorchSharp;
using VisualChat.Attention;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// Gradient checkpointing of one decoder layer (TorchSharp has no torch.utils.checkpoint): the forward runs without
/// recording a graph and keeps only the layer input and the small per-forward tensors (positions, padding, modality,
/// the attention extension's tensors); the backward rebuilds the layer's attention context from them (the forward's
/// context, with the kernel's per-forward state, ended with the forward), recomputes the layer with gradients on,
/// backpropagates the incoming gradient through it — which accumulates the layer's parameter gradients — and returns
/// the gradients of the input and of the extension's tensors (e.g. the image memory of <c>causal+cross</c>, whose
/// producer, the projection, trains). Under ZeRO-3 the layer's weights are gathered again for the recomputation
/// (<see cref="LlamaModel.LayerWeights"/>) and released once its backward is done. LLaMA has no dropout, so the
/// recomputation is exact.
/// </summary>
internal sealed class DecoderLayerCheckpoint : autograd.MultiTensorFunction<DecoderLayerCheckpoint>
{
    public override string Name => nameof(DecoderLayerCheckpoint);

    /// <summary>The layer's output for <paramref name="hidden"/>, with a graph node that recomputes the layer in backward.</summary>
    /// <param name="context">This forward's shared layer context; the backward rebuilds one from the saved tensors.</param>
    public static Tensor Forward(LlamaModel model, int layer, Tensor hidden, DecoderLayerContext context, Tensor positions,
        Tensor? keyPadding, Tensor? modality, IAttentionExtension? extension)
    {
        // With frozen embeddings the first layer's input needs no gradient, and a node whose inputs need none is never
        // run in backward; a throwaway leaf that requires grad keeps the layer's parameters in the graph.
        Tensor? anchor = hidden.requires_grad ? null : ones(1, requires_grad: true);
        // The extension's tensors are arguments too, so gradients flow back to whatever produced them.
        var arguments = new List<object> { hidden, anchor!, new Saved(model, layer, context, positions, keyPadding, modality, extension) };
        if (extension is not null) arguments.AddRange(extension.Tensors);
        return apply(arguments.ToArray())[0];
    }

    sealed record Saved(LlamaModel Model, int Layer, DecoderLayerContext Context, Tensor Positions, Tensor? KeyPadding, Tensor? Modality,
        IAttentionExtension? Extension);

    public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var hidden = (Tensor)vars[0];
        var saved = (Saved)vars[2];
        var extensionTensors = saved.Extension?.Tensors ?? [];
        ctx.save_for_backward([hidden, saved.Positions, saved.KeyPadding!, saved.Modality!, .. extensionTensors]);
        ctx.save_data("layer", saved.Layer);
        ctx.save_data("model", saved.Model);
        ctx.save_data("extension", saved.Extension!);
        ctx.save_data("extensionNeedsGrad", extensionTensors.Select(t => t.requires_grad).ToArray());
        using var scope = NewDisposeScope();
        return [saved.Model.layers[saved.Layer].forward(hidden, saved.Context).DetachFromDisposeScope()];
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grad_outputs)
    {
        var tensors = ctx.get_saved_variables();
        int layer = (int)ctx.get_data("layer");
        var model = (LlamaModel)ctx.get_data("model");
        var extension = (IAttentionExtension?)ctx.get_data("extension");
        var extensionNeedsGrad = (bool[])ctx.get_data("extensionNeedsGrad");
        Tensor? Optional(Tensor t) => t is null || t.IsInvalid ? null : t;
        Tensor inputGrad;
        var extensionGrads = new Tensor?[extensionNeedsGrad.Length];
        using (var scope = NewDisposeScope())
        using (enable_grad())
        using (model.LayerWeights?.Materialize(layer)) {
            var input = tensors[0].detach().requires_grad_(true);
            var extensionInputs = Enumerable.Range(0, extensionNeedsGrad.Length)
                .Select(i => extensionNeedsGrad[i] ? tensors[4 + i].detach().requires_grad_(true) : tensors[4 + i].detach()).ToList();
            var rebuilt = extension?.WithTensors(extensionInputs);
            using var context = model.LayerContext(input, tensors[1], Optional(tensors[2]), Optional(tensors[3]), past: 0, cache: null, rebuilt);
            var output = model.layers[layer].forward(input, context);
            output.backward([grad_outputs[0]]);
            inputGrad = input.grad!.DetachFromDisposeScope();
            for (int i = 0; i < extensionInputs.Count; i++)
                extensionGrads[i] = extensionNeedsGrad[i] ? extensionInputs[i].grad?.DetachFromDisposeScope() : null;
        }
        foreach (var t in tensors) t?.Dispose();
        // One gradient per forward argument: the input, the anchor (none), the saved record (not a tensor), then the
        // extension's tensors.
        return [inputGrad, null!, null!, .. extensionGrads.Select(g => g!)];
    }
}
