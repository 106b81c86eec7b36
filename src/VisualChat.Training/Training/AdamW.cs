using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Training;

/// <summary>One AdamW parameter group: its tensors (fp32 master weights), LR and weight decay.</summary>
public sealed class AdamWGroup(string name, IReadOnlyList<(string Name, Tensor Master)> parameters, double learningRate, double weightDecay)
{
    public string Name { get; } = name;
    public IReadOnlyList<(string Name, Tensor Master)> Parameters { get; } = parameters;
    public double BaseLearningRate { get; } = learningRate;
    public double LearningRate { get; set; } = learningRate;
    public double WeightDecay { get; } = weightDecay;
}

/// <summary>
/// AdamW with torch.optim.AdamW's exact update (decoupled decay <c>p *= 1 - lr·wd</c>, bias-corrected moments, eps
/// added after dividing sqrt(v) by sqrt(1-β2^t)). Written here, not taken from TorchSharp, so that every moment
/// tensor and step count can be saved and restored by name.
/// </summary>
public sealed class AdamW : IDisposable
{
    sealed class State(Tensor expAvg, Tensor expAvgSq) { public Tensor ExpAvg = expAvg; public Tensor ExpAvgSq = expAvgSq; public long Step; }

    readonly Dictionary<string, State> _state = new();
    public IReadOnlyList<AdamWGroup> Groups { get; }
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Epsilon { get; }
    // Held for the optimizer's life: TorchSharp does not keep Scalars alive during the native call (see TorchScalars).
    readonly Scalar _beta2, _oneMinusBeta2, _epsilon;

    public AdamW(IReadOnlyList<AdamWGroup> groups, double beta1, double beta2, double epsilon)
    {
        Groups = groups;
        (Beta1, Beta2, Epsilon) = (beta1, beta2, epsilon);
        _beta2 = beta2.ToScalar();
        _oneMinusBeta2 = (1 - beta2).ToScalar();
        _epsilon = epsilon.ToScalar();
        var names = new HashSet<string>();
        foreach (var (name, _) in groups.SelectMany(g => g.Parameters))
            if (!names.Add(name)) throw new ArgumentException($"Parameter '{name}' is in two AdamW groups.");
    }

    /// <summary>One update; <paramref name="gradientOf"/> gives each parameter's (fp32, unscaled) gradient, null to
    /// leave it alone this step.</summary>
    public void Step(Func<string, Tensor?> gradientOf)
    {
        using var noGrad = no_grad();
        foreach (var group in Groups)
        {
            foreach (var (name, p) in group.Parameters)
            {
                using var scope = NewDisposeScope();
                var grad = gradientOf(name);
                if (grad is null) continue;
                if (!_state.TryGetValue(name, out var s))
                {
                    s = new State(zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope());
                    _state[name] = s;
                }
                s.Step++;
                using var decay = (1 - group.LearningRate * group.WeightDecay).ToScalar();
                p.mul_(decay);
                s.ExpAvg.lerp_(grad, 1 - Beta1);   // lerp_ takes a Tensor weight: a 0-dim tensor this step's DisposeScope holds
                s.ExpAvgSq.mul_(_beta2).addcmul_(grad, grad, _oneMinusBeta2);
                double biasCorrection1 = 1 - Math.Pow(Beta1, s.Step);
                double biasCorrection2 = 1 - Math.Pow(Beta2, s.Step);
                double stepSize = group.LearningRate / biasCorrection1;
                using var sqrtBiasCorrection2 = Math.Sqrt(biasCorrection2).ToScalar();
                using var negativeStepSize = (-stepSize).ToScalar();
                var denom = s.ExpAvgSq.sqrt().div_(sqrtBiasCorrection2).add_(_epsilon, TorchScalars.One);
                p.addcdiv_(s.ExpAvg, denom, negativeStepSize);
            }
        }
    }

    /// <summary><c>state.{param}.exp_avg</c>, <c>.exp_avg_sq</c> and <c>.step</c> (int64 scalar) for every parameter updated so far.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> StateTensors()
    {
        foreach (var (name, s) in _state.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            yield return new($"state.{name}.exp_avg", s.ExpAvg);
            yield return new($"state.{name}.exp_avg_sq", s.ExpAvgSq);
            yield return new($"state.{name}.step", tensor(s.Step));
        }
    }

    /// <summary>Restores what <see cref="StateTensors"/> wrote; <paramref name="read"/> returns null for a missing name.</summary>
    public void LoadState(Func<string, Tensor?> read)
    {
        foreach (var (name, p) in Groups.SelectMany(g => g.Parameters))
        {
            var step = read($"state.{name}.step");
            if (step is null) continue;
            var expAvg = read($"state.{name}.exp_avg") ?? throw new InvalidDataException($"Optimizer state for '{name}' has a step but no exp_avg.");
            var expAvgSq = read($"state.{name}.exp_avg_sq") ?? throw new InvalidDataException($"Optimizer state for '{name}' has a step but no exp_avg_sq.");
            if (!expAvg.shape.SequenceEqual(p.shape)) throw new InvalidDataException($"Optimizer state 'state.{name}.exp_avg' has shape [{string.Join(",", expAvg.shape)}], parameter has [{string.Join(",", p.shape)}].");
            if (_state.Remove(name, out var old)) { old.ExpAvg.Dispose(); old.ExpAvgSq.Dispose(); }
            _state[name] = new State(expAvg.to(p.dtype, p.device).DetachFromDisposeScope(), expAvgSq.to(p.dtype, p.device).DetachFromDisposeScope()) { Step = step.to(ScalarType.Int64).item<long>() };
        }
    }

    public bool HasState(string name) => _state.ContainsKey(name);

    public void Dispose()
    {
        foreach (var s in _state.Values) { s.ExpAvg.Dispose(); s.ExpAvgSq.Dispose(); }
        _state.Clear();
        foreach (var scalar in new[] { _beta2, _oneMinusBeta2, _epsilon }) scalar.Dispose();
    }
}
