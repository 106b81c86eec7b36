using TorchSharp;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Model;

/// <summary>Tiny LLaMA configs and the closed-form weights shared with Fixtures/llama_reference.py.</summary>
public static class LlamaTestModels
{
    public static LlamaConfig Tiny(bool tied = false, RopeScalingConfig? ropeScaling = null, bool attentionBias = false) => new() {
        VocabSize = 128, HiddenSize = 64, IntermediateSize = 96, NumHiddenLayers = 2, NumAttentionHeads = 4,
        NumKeyValueHeads = 2, RopeTheta = 10000, RmsNormEps = 1e-5, MaxPositionEmbeddings = 8,
        TieWordEmbeddings = tied, RopeScaling = ropeScaling, AttentionBias = attentionBias, PadTokenId = null,
    };

    static int NameSeed(string name)
    {
        long sum = 0;
        for (int i = 0; i < name.Length; i++) sum += (i + 1) * (long)name[i];
        return (int)(sum % 997);
    }

    /// <summary>Same formula as weight() in llama_reference.py.</summary>
    public static Tensor ClosedFormWeight(string name, long[] shape)
    {
        using var scope = NewDisposeScope();
        long n = shape.Aggregate(1L, (a, b) => a * b);
        var x = arange(n, dtype: ScalarType.Float64) * 0.37 + 0.1 * NameSeed(name);
        var w = name.EndsWith("norm.weight") ? 1.0 + 0.1 * x.sin() : 0.08 * x.sin();
        return w.to(ScalarType.Float32).reshape(shape).MoveToOuterDisposeScope();
    }

    public static LlamaForCausalLM ClosedFormModel(LlamaConfig config)
    {
        var model = new LlamaForCausalLM(config, seed: 0);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        foreach (var (name, tensor) in model.state_dict())
            tensor.copy_(ClosedFormWeight(name, tensor.shape));
        model.eval();
        return model;
    }

    public static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "VisualChat.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException($"VisualChat.sln not found above {AppContext.BaseDirectory}.");
    }

    public static string SharedPath(params string[] parts) =>
        Path.Combine(new[] { RepoRoot(), "..", "shared" }.Concat(parts).ToArray());

    public static float MaxAbsDiff(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to(ScalarType.Float32) - b.to(ScalarType.Float32)).abs().max().item<float>();
    }
}
