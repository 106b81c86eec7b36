using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VisualChat.Training;

/// <summary>
/// LoRA around a frozen <see cref="Linear"/>: <c>y = base(x) + (x·Aᵀ·Bᵀ)·(alpha/r)</c>. State-dict keys follow PEFT:
/// <c>base_layer.weight</c>, <c>lora_A</c> [r, in] (kaiming-uniform, a=√5, as nn.Linear's init), <c>lora_B</c> [out, r]
/// (zeros, so a fresh adapter leaves the output unchanged). <see cref="Merge"/> folds B·A·(alpha/r) into the base weight.
/// </summary>
public sealed class LoraLinear : nn.Module<Tensor, Tensor>
{
    public readonly Linear base_layer;
    public readonly Parameter lora_A;
    public readonly Parameter lora_B;

    public int Rank { get; }
    public double Alpha { get; }
    public double Scaling => Alpha / Rank;
    public bool Merged { get; private set; }
    private readonly Scalar scaling;   // Scaling, held: a temporary Scalar may be finalized during the native call

    public LoraLinear(Linear baseLayer, int rank, double alpha, Generator? generator = null) : base(nameof(LoraLinear))
    {
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "LoRA rank (lora_dim) must be >= 1.");
        Rank = rank;
        Alpha = alpha;
        scaling = Scaling.ToScalar();
        base_layer = baseLayer;
        var weight = baseLayer.weight!;
        long outFeatures = weight.shape[0], inFeatures = weight.shape[1];
        // kaiming_uniform_(a=√5) on [r, in]: bound = 1/√in.
        double bound = 1.0 / Math.Sqrt(inFeatures);
        using (no_grad())
        {
            using var width = (2 * bound).ToScalar();
            using var offset = bound.ToScalar();
            lora_A = new Parameter(rand([rank, inFeatures], dtype: ScalarType.Float32, generator: generator).mul(width).sub(offset).to(weight.device), true);
            lora_B = new Parameter(zeros([outFeatures, rank], dtype: ScalarType.Float32, device: weight.device), true);
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = base_layer.forward(x);
        if (Merged) return y.MoveToOuterDisposeScope();
        var inputDtype = x.dtype;
        var update = nn.functional.linear(nn.functional.linear(x.to(lora_A.dtype), lora_A), lora_B).mul(scaling);
        return y.add(update.to(inputDtype), TorchScalars.One).MoveToOuterDisposeScope();
    }

    /// <summary>Adds B·A·(alpha/r) to the base weight; the adapter is then bypassed (its tensors are kept).</summary>
    public void Merge()
    {
        if (Merged) return;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var weight = base_layer.weight!;
        weight.add_(lora_B.matmul(lora_A).mul(scaling).to(weight.dtype), TorchScalars.One);
        Merged = true;
    }
}

/// <summary>Replaces <see cref="Linear"/> submodules whose full name matches a pattern by <see cref="LoraLinear"/>.</summary>
public static class LoraInjector
{
    /// <summary>
    /// Walks the module tree; each Linear whose dotted name matches one of <paramref name="patterns"/> (globs, or a
    /// plain substring as DSVC's lora_module_name) is wrapped. The parent's field holding it is reassigned by reflection
    /// and its submodule registration replaced under the same name, so state-dict keys become <c>name.base_layer.weight</c>,
    /// <c>name.lora_A</c>, <c>name.lora_B</c>. A parent whose field is typed <see cref="Linear"/> cannot hold the
    /// wrapper: that is an error naming the field (declare it as <c>Module&lt;Tensor, Tensor&gt;</c>).
    /// </summary>
    public static IReadOnlyList<string> Inject(nn.Module root, IReadOnlyList<string> patterns, int rank, double alpha, long seed)
    {
        var targets = root.named_modules()
            .Where(m => m.module is Linear && m.name.Length > 0 && ParameterSelection.MatchesAny(m.name, patterns, substring: true))
            .Select(m => m.name).ToList();
        if (targets.Count == 0)
            throw new TrainingConfigException($"Training config key 'lora_module_name' = [{string.Join(", ", patterns)}] matches no Linear layer.");
        using var generator = new Generator((ulong)seed);
        foreach (var name in targets)
        {
            int dot = name.LastIndexOf('.');
            var parent = dot < 0 ? root : root.named_modules().First(m => m.name == name[..dot]).module;
            var local = dot < 0 ? name : name[(dot + 1)..];
            var linear = (Linear)parent.named_children().First(c => c.name == local).module;
            Replace(parent, local, new LoraLinear(linear, rank, alpha, generator));
        }
        return targets;
    }

    /// <summary>Merges every LoRA adapter under <paramref name="root"/>.</summary>
    public static int MergeAll(nn.Module root)
    {
        int count = 0;
        foreach (var (_, module) in root.named_modules())
            if (module is LoraLinear lora && !lora.Merged) { lora.Merge(); count++; }
        return count;
    }

    /// <summary>Merges every adapter and puts each base <see cref="Linear"/> back in its place, so the module tree and its
    /// state-dict names are those of the original model (for export).</summary>
    public static int MergeAndUnwrap(nn.Module root)
    {
        var wrapped = root.named_modules().Where(m => m.module is LoraLinear).Select(m => m.name).ToList();
        var modules = root.named_modules().ToDictionary(m => m.name, m => m.module);
        foreach (var name in wrapped)
        {
            var lora = (LoraLinear)modules[name];
            lora.Merge();
            int dot = name.LastIndexOf('.');
            var parent = dot < 0 ? root : modules[name[..dot]];
            Replace(parent, name[(dot + 1)..], lora.base_layer);
        }
        return wrapped.Count;
    }

    static void Replace(nn.Module parent, string name, nn.Module replacement)
    {
        var field = parent.GetType().GetField(name, BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)
            ?? throw new InvalidOperationException($"{parent.GetType().Name} has no field '{name}' holding its submodule; LoRA cannot replace it.");
        if (!field.FieldType.IsInstanceOfType(replacement))
            throw new InvalidOperationException($"{parent.GetType().Name}.{name} is typed {field.FieldType.Name}, which cannot hold a LoraLinear; declare the field as Module<Tensor, Tensor> to allow LoRA on it.");
        field.SetValue(parent, replacement);
        var registry = typeof(nn.Module).GetField("_internal_submodules", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(parent)
            as IDictionary<string, nn.Module> ?? throw new InvalidOperationException("TorchSharp's submodule registry changed shape; LoRA injection needs updating.");
        registry[name] = replacement;
    }
}
