using TorchSharp;
using VisualChat.Data;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Training;

/// <summary>
/// Text-only causal LM training of <see cref="LlamaForCausalLM"/>: mean cross-entropy of next-token prediction over
/// labels != -100 (HF's shift: logits[:, :-1] against labels[:, 1:]), computed in fp32.
/// By default it declares the token embeddings trainable (the same rule VisualChat uses for its language model);
/// <c>unfreeze: ["*"]</c> trains everything. All its parameters count as pretrained.
/// </summary>
public sealed class LlamaLmTrainable(LlamaForCausalLM model, Func<string, bool>? declaredTrainable = null) : ITrainable<TrainingBatch>
{
    public const string EmbeddingParameter = "model.embed_tokens.weight";

    public LlamaForCausalLM Model { get; } = model;
    public nn.Module Module => Model;

    public bool IsDeclaredTrainable(string parameterName) => declaredTrainable?.Invoke(parameterName) ?? parameterName == EmbeddingParameter;

    public bool IsPretrained(string parameterName) => !ParameterSelection.IsLoraParameter(parameterName);

    public LossResult ComputeLoss(TrainingBatch batch)
    {
        using var scope = NewDisposeScope();
        var device = Model.model.embed_tokens.weight!.device;
        var ids = batch.InputIds.to(device);
        var mask = batch.AttentionMask.to(device);
        var labels = batch.Labels.to(device);
        var (loss, tokens) = Model.Loss(new CausalLMInput(InputIds: ids, AttentionMask: mask), labels);
        return new LossResult(loss.MoveToOuterDisposeScope(), tokens, 0);
    }

    public IReadOnlyList<string> SampleIds(TrainingBatch batch) =>
        batch.Samples.Select(s => string.Join("+", s.Source.SourceIds.Select(id => id.ToString()))).ToList();
}
