using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>
/// AdamW with linear warm-up and cosine decay to 10 %, shared by all demo stages. Uses the project's
/// <see cref="Training.AdamW"/> (torch.optim.AdamW's update, eps 1e-8) rather than TorchSharp's optim.AdamW, whose step
/// passes temporary Scalars to libtorch that a GC on another thread can finalize mid-call (see TorchScalars).
/// </summary>
public sealed class DemoOptimization : IDisposable
{
    readonly Training.AdamW _optimizer;
    readonly IReadOnlyList<TorchSharp.Modules.Parameter> _parameters;
    readonly Dictionary<string, TorchSharp.Modules.Parameter> _byName;
    readonly double _learningRate;
    readonly int _steps, _warmup;

    public DemoOptimization(IEnumerable<TorchSharp.Modules.Parameter> parameters, double learningRate, int steps, int warmup,
        double beta1 = 0.9, double beta2 = 0.95, double weightDecay = 0.0)
    {
        _parameters = parameters.ToList();
        if (_parameters.Count == 0) throw new ArgumentException("Nothing to train: no parameter requires grad.", nameof(parameters));
        _learningRate = learningRate;
        _steps = Math.Max(1, steps);
        _warmup = Math.Max(0, Math.Min(warmup, steps / 4));
        _byName = _parameters.Select((p, i) => (Name: i.ToString(System.Globalization.CultureInfo.InvariantCulture), p))
            .ToDictionary(e => e.Name, e => e.p);
        var group = new Training.AdamWGroup("demo", _byName.Select(e => (e.Key, (Tensor)e.Value)).ToList(), learningRate, weightDecay);
        _optimizer = new Training.AdamW(new[] { group }, beta1, beta2, epsilon: 1e-8);
    }

    public double LearningRateAt(int step)
    {
        if (step < _warmup) return _learningRate * (step + 1) / _warmup;
        double progress = (double)(step - _warmup) / Math.Max(1, _steps - _warmup);
        return _learningRate * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1.0, progress))));
    }

    /// <summary>One update from <paramref name="loss"/>; returns the loss value.</summary>
    public float Step(int step, Tensor loss)
    {
        foreach (var group in _optimizer.Groups) group.LearningRate = LearningRateAt(step);
        // Like optim.Optimizer.zero_grad (libtorch's set_to_none): a parameter the next graph does not reach has no
        // gradient and AdamW leaves it (and its moments) alone, instead of stepping it with a zero gradient.
        foreach (var parameter in _parameters) parameter.grad = null;
        loss.backward();
        nn.utils.clip_grad_norm_(_parameters, 1.0);   // native, takes plain doubles: no Scalars involved
        _optimizer.Step(name => _byName[name].grad);
        return loss.item<float>();
    }

    public void Dispose() => _optimizer.Dispose();
}
