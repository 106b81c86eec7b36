using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Data;
using VisualChat.Training.Distributed;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Training;

/// <summary>A NaN/Inf loss or gradient with on_nan: stop; names the step and the batch's sample ids.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);

/// <summary>How a run ended.</summary>
public sealed record TrainingSummary(
    long Steps, int Epochs, TimeSpan WallTime, double? BestEvalLoss, double? FinalEvalLoss, double? LastLoss,
    long SkippedSteps, long SkippedBatches, bool Interrupted, IReadOnlyList<string> Checkpoints, string RunDir, long SkippedSamples = 0)
{
    public override string ToString() =>
        $"{(Interrupted ? "interrupted" : "finished")} after {Steps} steps ({Epochs} epochs) in {WallTime:hh\\:mm\\:ss}; " +
        $"last loss {LastLoss:F4}, best eval loss {(BestEvalLoss is { } b ? b.ToString("F4") : "n/a")}, skipped {SkippedSteps} steps / {SkippedBatches} batches / {SkippedSamples} unloadable samples; " +
        $"checkpoints: {(Checkpoints.Count == 0 ? "none" : string.Join(", ", Checkpoints))}";
}

/// <summary>
/// Generic training loop: AdamW over the trainable parameters (fp32 master weights), HF LR schedules, gradient
/// accumulation and clipping, fp16 loss scaling, evaluation, atomic checkpoints and exact resume.
/// Frozen parameters get requires_grad = false, so backward computes no weight gradient for them and the optimizer
/// keeps no state for them; gradients still flow through frozen layers to trainable ones before them.
/// Under mpirun (a communicator given) every rank runs this same loop on its shard of each global batch and joins the
/// collectives of <see cref="DataParallel"/>; rank 0 alone writes metrics, plots and checkpoints.
/// </summary>
public sealed class Trainer<TBatch> : ITrainer where TBatch : IDisposable
{
    readonly ITrainable<TBatch> _model;
    readonly ITrainingData<TBatch> _data;
    readonly TrainingConfig _config;
    readonly JsonObject _manifestExtras;
    readonly List<(string Name, Parameter Parameter, Tensor Master)> _trainable = [];
    readonly LrSchedule _schedule;
    readonly AdamW _optimizer;
    readonly LossScaler _scaler;
    readonly ScalarType _storageDtype;
    readonly MetricsLog _metrics;
    readonly List<string> _checkpoints = [];
    readonly string? _precisionWarning;
    readonly List<string> _startupNotes = [];
    /// <summary>Outcome (true = skipped for NaN/Inf) of the last <see cref="DivergenceWindow"/> batches, for on_nan: skip.</summary>
    readonly Queue<bool> _recentBatches = new();
    /// <summary>Unloadable samples recorded by the checkpoint a run resumed from.</summary>
    readonly HashSet<string> _restoredSkippedSamples = new(StringComparer.Ordinal);
    /// <summary>Set under mpirun: gradient and loss reduction, ZeRO partitioning.</summary>
    readonly DataParallel? _parallel;
    /// <summary>ZeRO-3: this rank's 1/N of the frozen decoder layers, gathered layer by layer while they run.</summary>
    FrozenLayerShards? _shards;
    /// <summary>False on ranks other than 0: they train but write nothing into the run folder.</summary>
    readonly bool _writes;

    /// <summary>Batches over which on_nan: skip measures the skipped share (max_nan_skip_fraction).</summary>
    public const int DivergenceWindow = 20;

    long _step;
    int _epoch;
    int _batchInEpoch;
    long _skippedBatches;
    int _emptyBatchesSeen;
    double? _bestEvalLoss;
    double? _lastEvalLoss;
    double? _lastLoss;

    public TrainingConfig Config => _config;
    public ITrainable<TBatch> Model => _model;
    public string RunDir { get; }
    public int TotalSteps { get; }
    public long GlobalStep => _step;
    public LossScaler Scaler => _scaler;
    public ScalarType StorageDtype => _storageDtype;
    public IReadOnlyList<string> TrainableNames => _trainable.Select(t => t.Name).ToList();
    public IReadOnlyList<AdamWGroup> ParameterGroups => _optimizer.Groups;
    public MetricsLog Metrics => _metrics;

    /// <summary>Called after each optimizer step (or skipped step) and each evaluation.</summary>
    public Action<StepMetrics>? Progress { get; set; }
    /// <summary>Messages: resume, checkpoints, warnings.</summary>
    public Action<string>? Log { get; set; }
    /// <summary>Diagnostic hook run after backward, before unscaling and the overflow check (tests inject overflow here).</summary>
    public Action<long, IReadOnlyList<(string Name, Parameter Parameter)>>? AfterBackward { get; set; }

    /// <param name="manifestExtras">Added to every checkpoint.json: base model folder, configs, tokenizer, data config.</param>
    /// <param name="communicator">The MPI job this rank belongs to (null: one process); <paramref name="data"/> must
    /// then read this rank's <see cref="DataShard"/>.</param>
    public Trainer(ITrainable<TBatch> model, ITrainingData<TBatch> data, TrainingConfig config, JsonObject? manifestExtras = null, MpiCommunicator? communicator = null)
    {
        config.Validate();
        _model = model;
        _data = data;
        _config = config;
        _manifestExtras = manifestExtras ?? new JsonObject();
        _writes = communicator is null || communicator.IsRoot;
        RunDir = Path.GetFullPath(config.OutputDir);
        Directory.CreateDirectory(RunDir);
        if (_writes)
        {
            _startupNotes.AddRange(CheckpointStore.Recover(RunDir));
            PrepareRunDir();
        }

        var device = torch.device(config.Device);
        _storageDtype = ResolvePrecision(config.Precision, device, out _precisionWarning);
        _scaler = new LossScaler(_storageDtype == ScalarType.Float16, config.InitialLossScale, config.LossScaleWindow);

        var module = model.Module;
        if (_storageDtype != ScalarType.Float32) module.to(_storageDtype);
        foreach (var (name, parameter) in module.named_parameters())
        {
            bool trainable = ParameterSelection.IsTrainable(name, config, model.IsDeclaredTrainable);
            parameter.requires_grad = trainable;
            if (!trainable) continue;
            var master = _storageDtype == ScalarType.Float32 ? parameter : parameter.detach().to(ScalarType.Float32).clone().DetachFromDisposeScope();
            _trainable.Add((name, parameter, master));
        }
        if (_trainable.Count == 0)
            throw new TrainingConfigException("No parameter is trainable: the model declares none and 'unfreeze'/'lora_dim' select none.");
        if (communicator is not null)
            _parallel = new DataParallel(communicator, _trainable.Select(t => (t.Name, t.Master)).ToList(), config.Distributed.ZeroStage, config.Distributed.BucketMb);

        var groups = new List<AdamWGroup>();
        foreach (var pretrained in new[] { false, true })
        {
            foreach (var noDecay in new[] { false, true })
            {
                var members = _trainable.Where(t => model.IsPretrained(t.Name) == pretrained)
                    .Where(t => ParameterSelection.IsNoDecay(t.Name, t.Parameter) == noDecay).Select(t => (t.Name, t.Master)).ToList();
                if (members.Count == 0) continue;
                double lr = pretrained ? config.PretrainedLearningRate ?? config.LearningRate : config.LearningRate;
                // ZeRO 1/2: this rank's AdamW updates (and keeps moments for) only its pieces of the group's tensors;
                // the group stays even when it holds none here, so the LR schedule reads the same on every rank.
                if (_parallel is not null)
                    members = members.Select(m => (m.Name, Owned: _parallel.Owned(m.Name, m.Master))).Where(m => m.Owned is not null).Select(m => (m.Name, m.Owned!)).ToList();
                groups.Add(new AdamWGroup((pretrained ? "pretrained_" : "") + (noDecay ? "no_decay" : "decay"), members, lr, noDecay ? 0.0 : config.WeightDecay));
            }
        }

        _optimizer = new AdamW(groups, config.AdamBeta1, config.AdamBeta2, config.AdamEpsilon);

        int total = 0;
        for (int e = 0; e < config.NumTrainEpochs; e++) total += StepsPerEpoch(e);
        if (config.MaxSteps > 0) total = Math.Min(total, config.MaxSteps);
        TotalSteps = Math.Max(1, total);
        _schedule = new LrSchedule(config.LrSchedulerType, config.WarmupSteps(TotalSteps), TotalSteps);
        // Other ranks never append, and must not read metrics.jsonl while rank 0 may be replacing it (overwrite):
        // they get a log of their own that stays empty and is never written.
        _metrics = new MetricsLog(Path.Combine(RunDir, _writes ? "metrics.jsonl" : $"rank-{communicator!.Rank}.metrics.jsonl"));
    }

    /// <summary>A new run (resume: none) refuses an output_dir holding another run's checkpoints or metrics, unless
    /// overwrite is set (then they are deleted), so metrics.jsonl never mixes two runs.</summary>
    void PrepareRunDir()
    {
        if (_config.Resume is not ("none" or "")) return;
        var metricsPath = Path.Combine(RunDir, "metrics.jsonl");
        var checkpoints = CheckpointStore.List(RunDir);
        bool used = checkpoints.Count > 0 || (File.Exists(metricsPath) && new FileInfo(metricsPath).Length > 0);
        if (!used) return;
        if (!_config.Overwrite)
        {
            throw new TrainingConfigException(
                $"Training config key 'output_dir' = {RunDir} already holds a run ({(checkpoints.Count > 0 ? "checkpoints " + string.Join(", ", checkpoints.Select(c => c.Name)) : "metrics.jsonl")}); " +
                "continue it with --resume auto, start over with --overwrite (deletes its checkpoints and metrics), or choose another output_dir.");
        }

        foreach (var checkpoint in checkpoints) Directory.Delete(checkpoint.Path, recursive: true);
        foreach (var file in new[] { metricsPath, Path.Combine(RunDir, "loss.png") })
            if (File.Exists(file)) File.Delete(file);
        _startupNotes.Add($"overwrite: deleted the previous run's {checkpoints.Count} checkpoint(s) and metrics in {RunDir}");
    }

    int StepsPerEpoch(int epoch) => (_data.BatchesPerEpoch(epoch) + _config.GradientAccumulationSteps - 1) / _config.GradientAccumulationSteps;

    /// <summary>fp32, or the half type frozen weights are stored in; <c>auto</c> is fp32 on CPU (half matmuls are slow there).</summary>
    public static ScalarType ResolvePrecision(string precision, Device device, out string? warning)
    {
        warning = null;
        bool cpu = device.type == DeviceType.CPU;
        var dtype = precision switch {
            "fp32" => ScalarType.Float32,
            "bf16" => ScalarType.BFloat16,
            "fp16" => ScalarType.Float16,
            _ => cpu ? ScalarType.Float32 : ScalarType.BFloat16,
        };
        if (cpu && dtype != ScalarType.Float32)
            warning = $"precision {precision} on CPU: half-precision matmuls are far slower than fp32 here; use precision: fp32 unless you need to test it.";
        return dtype;
    }

    public TrainingSummary Run(CancellationToken cancellationToken = default)
    {
        var wall = Stopwatch.StartNew();
        // Rank 0 recovered and prepared the run folder in the constructor; the others read it only after that.
        _parallel?.Barrier();
        if (_precisionWarning is not null) Log?.Invoke(_precisionWarning);
        foreach (var note in _startupNotes) Log?.Invoke(note);
        ResumeIfAsked();
        if (_parallel is not null)
        {
            _parallel.BroadcastParameters();
            if (_storageDtype != ScalarType.Float32)
            {
                using (no_grad())
                    foreach (var (_, parameter, master) in _trainable) parameter.copy_(master);
            }
            if (_parallel.Stage == 3 && _shards is null) ShardFrozenLayers();
        }
        bool interrupted = false;
        if (_step == 0 && _batchInEpoch == 0 && _epoch == 0 && _data.HasEval) RecordEval(Evaluate());

        int accumulation = _config.GradientAccumulationSteps;
        var throughputClock = Stopwatch.StartNew();
        long tokensSinceLog = 0, imagesSinceLog = 0;
        var stepClock = Stopwatch.StartNew();
        long stepsThisSession = 0;
        bool done = _step >= TotalSteps;
        while (!done && _epoch < _config.NumTrainEpochs)
        {
            int batchesInEpoch = _data.BatchesPerEpoch(_epoch);
            int micro = 0;
            double lossSum = 0;
            long tokens = 0, images = 0;
            _model.Module.train();
            throughputClock.Restart();
            // Cancellation is honoured only at optimizer-step boundaries (below), so that a resumable checkpoint can follow.
            var batches = _data.TrainBatches(_epoch, _batchInEpoch, CancellationToken.None);
            foreach (var (item, end) in WithEnd(_parallel is null ? batches : AlignedToPlan(batches, batchesInEpoch)))
            {
                // Plan batches the data passed over because none of their samples loaded still count as consumed,
                // so the position (and a resume from it) stays on the plan.
                _batchInEpoch += EmptyBatchesPassed();
                if (!end)
                {
                    // Null only under mpirun: this rank has no sample of this global micro-batch but joins its collectives.
                    using var batch = item;
                    manual_seed((long)(StableRandom.Hash(_config.Seed, "micro-batch", _step, micro) >> 1));
                    using var scope = NewDisposeScope();
                    var result = batch is null ? null : _model.ComputeLoss(batch);
                    // ZeRO-3's layer gathers are collectives: a rank without a sample takes part in the forward's…
                    if (batch is null) _shards?.JoinForward();
                    var loss = result?.Loss.to(ScalarType.Float32);
                    double value = loss is null ? 0 : loss.item<float>();
                    long batchTokens = result?.Tokens ?? 0, batchImages = result?.Images ?? 0;
                    _batchInEpoch++;
                    // This rank's share of the global micro-batch's loss: its target tokens over all ranks' (1 alone).
                    double share = 1;
                    bool counts = true;
                    if (_parallel is not null)
                    {
                        var sums = _parallel.Combine(value, batchTokens, batchImages, present: batch is not null);
                        counts = sums.Present;
                        share = sums.Targets > 0 ? batchTokens / (double)sums.Targets : 0;
                        value = sums.NonFinite ? double.NaN : sums.Loss;
                        (batchTokens, batchImages) = (sums.Targets, sums.Images);
                    }
                    if (counts && !double.IsFinite(value))
                    {
                        var ids = batch is null ? "(on another rank)" : string.Join(", ", _model.SampleIds(batch));
                        if (_config.OnNan == "stop")
                            throw new TrainingDivergedException($"Loss is {value} at step {_step + 1} (epoch {_epoch}, batch {_batchInEpoch - 1}); samples: {ids}. Lower learning_rate, check the data, or set on_nan: skip.");
                        _skippedBatches++;
                        Log?.Invoke($"skipped batch {_batchInEpoch - 1} of epoch {_epoch} (loss {value}); samples: {ids}");
                        RecordBatchOutcome(skipped: true);
                    }
                    else if (counts)
                    {
                        if (loss is not null)
                        {
                            using var lossScale = (_scaler.Scale / accumulation * share).ToScalar();   // held: see TorchScalars
                            loss.mul(lossScale).backward();
                        }
                        else
                        {
                            _shards?.JoinBackward();   // …and in the backward's
                        }
                        lossSum += value;
                        micro++;
                        RecordBatchOutcome(skipped: false);
                        tokens += batchTokens;
                        images += batchImages;
                    }
                }

                bool lastOfEpoch = end || _batchInEpoch >= batchesInEpoch;
                if (micro < accumulation && !lastOfEpoch) continue;
                if (micro == 0) continue;
                var metrics = OptimizerStep(lossSum / micro, micro, accumulation);
                stepsThisSession++;
                tokensSinceLog += tokens; imagesSinceLog += images;
                double seconds = Math.Max(1e-9, throughputClock.Elapsed.TotalSeconds);
                double perStep = stepClock.Elapsed.TotalSeconds / stepsThisSession;
                metrics = metrics with {
                    TokensPerSecond = tokensSinceLog / seconds, ImagesPerSecond = imagesSinceLog / seconds,
                    Epoch = _epoch + _batchInEpoch / (double)Math.Max(1, batchesInEpoch), EtaSeconds = perStep * (TotalSteps - _step),
                };
                tokensSinceLog = imagesSinceLog = 0;
                if (_writes) _metrics.Append(metrics);
                Progress?.Invoke(metrics);
                micro = 0; lossSum = 0; tokens = 0; images = 0;

                if (_config.EvalEverySteps > 0 && _step % _config.EvalEverySteps == 0 && _data.HasEval) RecordEval(Evaluate());
                if (_config.SaveEverySteps > 0 && _step % _config.SaveEverySteps == 0) SaveCheckpoint("latest");
                if (_step >= TotalSteps) { done = true; break; }
                // Under mpirun a signal may reach some ranks only: all stop at the same step or none does.
                bool cancel = cancellationToken.IsCancellationRequested;
                if (_parallel?.AnyRank(cancel) ?? cancel) { interrupted = true; break; }
                // Evaluation and checkpoint time are not training throughput.
                throughputClock.Restart();
            }
            if (interrupted || (done && _batchInEpoch < batchesInEpoch)) break;
            if (_batchInEpoch < batchesInEpoch) { interrupted = true; break; }
            _epoch++;
            _batchInEpoch = 0;
            double? evalLoss = null;
            if (_data.HasEval) { evalLoss = Evaluate(); RecordEval(evalLoss.Value); }
            bool improved = evalLoss is { } l && double.IsFinite(l) && (_bestEvalLoss is null || l < _bestEvalLoss) ;
            if (improved) _bestEvalLoss = evalLoss;
            if (_config.SaveEveryEpochs > 0 && _epoch % _config.SaveEveryEpochs == 0) SaveCheckpoint($"epoch-{_epoch}");
            if (improved) SaveCheckpoint("best");
        }

        if (interrupted) SaveCheckpoint("latest");
        else if (_config.SaveFinal) SaveCheckpoint("final");
        return new TrainingSummary(_step, _epoch, wall.Elapsed, _bestEvalLoss, _lastEvalLoss, _lastLoss, _scaler.SkippedSteps, _skippedBatches,
            interrupted, _checkpoints.Distinct().ToList(), RunDir, SkippedSamples().Count);
    }

    /// <summary>Under mpirun: one entry per plan position from the current one to the end of the epoch — this rank's
    /// batch, or null where its shard held no loadable sample — so every rank meets every global micro-batch.</summary>
    IEnumerable<TBatch?> AlignedToPlan(IEnumerable<TBatch> batches, int batchesInEpoch)
    {
        foreach (var batch in batches)
        {
            for (int passed = EmptyBatchesPassed(); passed > 0; passed--) yield return default;
            yield return batch;
        }
        EmptyBatchesPassed();
        while (_batchInEpoch < batchesInEpoch) yield return default;
    }

    static IEnumerable<(T? Item, bool End)> WithEnd<T>(IEnumerable<T> items)
    {
        foreach (var item in items) yield return (item, false);
        yield return (default, true);
    }

    int EmptyBatchesPassed()
    {
        if (_data is not ISkippedSamples data) return 0;
        int passed = data.EmptyTrainBatches - _emptyBatchesSeen;
        _emptyBatchesSeen = data.EmptyTrainBatches;
        return passed;
    }

    /// <summary>Distinct unloadable samples of this run, resumed sessions included ("file#record: reason").</summary>
    public IReadOnlyCollection<string> SkippedSamples()
    {
        var all = new HashSet<string>(_restoredSkippedSamples, StringComparer.Ordinal);
        if (_data is ISkippedSamples data) all.UnionWith(data.SkippedSamples);
        return all;
    }

    /// <summary>on_nan: skip tolerates occasional bad batches, not a diverged run: past max_nan_skip_fraction of the
    /// last <see cref="DivergenceWindow"/> batches the run fails (no final/ or best/ is written).</summary>
    void RecordBatchOutcome(bool skipped)
    {
        _recentBatches.Enqueue(skipped);
        while (_recentBatches.Count > DivergenceWindow) _recentBatches.Dequeue();
        int count = _recentBatches.Count(b => b);
        if (count > _config.MaxNanSkipFraction * DivergenceWindow)
        {
            throw new TrainingDivergedException(
                $"The run diverged: {count} of the last {_recentBatches.Count} batches had a NaN/Inf loss or gradient at step {_step + 1} (epoch {_epoch}), " +
                $"more than max_nan_skip_fraction = {_config.MaxNanSkipFraction:P0} of {DivergenceWindow}. Lower learning_rate (it is {_config.LearningRate:G3}) " +
                $"and resume from the last good checkpoint ({CheckpointStore.Latest(RunDir)?.Path ?? "none yet"}) or start over; no final/ or best/ was written.");
        }
    }

    /// <summary>final/ and best/ are what users deploy: never written from weights that are no longer finite.</summary>
    void EnsureFiniteWeights(string checkpoint)
    {
        using var scope = NewDisposeScope();
        foreach (var (name, _, master) in _trainable)
        {
            if (!master.isfinite().all().item<bool>())
                throw new TrainingDivergedException($"The run diverged: trainable tensor '{name}' holds NaN/Inf at step {_step}; {checkpoint}/ was not written. Lower learning_rate and resume from the last good checkpoint.");
        }
    }

    StepMetrics OptimizerStep(double meanLoss, int microBatches, int accumulation)
    {
        using var scope = NewDisposeScope();
        AfterBackward?.Invoke(_step, _trainable.Select(t => (t.Name, t.Parameter)).ToList());
        // Loss was divided by the configured accumulation; a short last group is rescaled to a true mean.
        double unscale = accumulation / (double)microBatches / _scaler.Scale;
        using var unscaleScalar = unscale.ToScalar();   // held: see TorchScalars
        var gradients = new Dictionary<string, Tensor>();
        double gradNorm;
        if (_parallel is not null)
        {
            (gradients, gradNorm) = _parallel.ReduceGradients(_trainable.Select(t => t.Parameter.grad).ToList(), unscale != 1.0 ? unscaleScalar : null);
        }
        else
        {
            foreach (var (name, parameter, _) in _trainable)
            {
                var grad = parameter.grad;
                if (grad is null) continue;
                var g = grad.to(ScalarType.Float32);
                if (unscale != 1.0) g = ReferenceEquals(g, grad) ? g.mul(unscaleScalar) : g.mul_(unscaleScalar);
                gradients[name] = g;
            }
            gradNorm = gradients.Count == 0 ? 0.0 : stack(gradients.Values.Select(g => g.norm()).ToArray()).norm().item<float>();
        }
        bool finite = double.IsFinite(gradNorm);
        if (!finite && !_scaler.Enabled && _config.OnNan == "stop")
            throw new TrainingDivergedException($"Gradient norm is {gradNorm} at step {_step + 1} (epoch {_epoch}, batch {_batchInEpoch - 1}). Lower learning_rate or set on_nan: skip.");
        bool apply = _scaler.Update(finite);
        if (!apply && !_scaler.Enabled)
        {
            _skippedBatches += microBatches;
            for (int i = 0; i < microBatches; i++) RecordBatchOutcome(skipped: true);
        }
        double lr = 0;
        if (apply)
        {
            if (_config.MaxGradNorm > 0)
            {
                double coefficient = _config.MaxGradNorm / (gradNorm + 1e-6);
                using var coefficientScalar = coefficient.ToScalar();
                if (coefficient < 1) foreach (var g in gradients.Values) g.mul_(coefficientScalar);
            }
            double multiplier = _schedule.Multiplier((int)Math.Min(int.MaxValue, _step));
            foreach (var group in _optimizer.Groups) group.LearningRate = group.BaseLearningRate * multiplier;
            lr = _optimizer.Groups[0].LearningRate;
            _optimizer.Step(name => gradients.GetValueOrDefault(name));
            _parallel?.GatherParameters();
            if (_storageDtype != ScalarType.Float32)
            {
                using (no_grad())
                    foreach (var (_, parameter, master) in _trainable) parameter.copy_(master);
            }
        }
        foreach (var (_, parameter, _) in _trainable) parameter.grad?.zero_();
        _step++;
        _lastLoss = meanLoss;
        return new StepMetrics {
            Step = _step, Loss = meanLoss, LearningRate = lr, GradNorm = gradNorm, LossScale = _scaler.Scale,
            Skipped = _scaler.SkippedSteps, SkippedBatches = _skippedBatches, TotalSteps = TotalSteps, SkippedSamples = SkippedSamples().Count,
        };
    }

    /// <summary>Token-weighted mean loss over the eval batches, in eval mode without gradients.</summary>
    public double Evaluate(CancellationToken cancellationToken = default)
    {
        _model.Module.eval();
        double weighted = 0;
        long weight = 0;
        try
        {
            using var noGrad = no_grad();
            using var batches = _data.EvalBatches(cancellationToken).GetEnumerator();
            while (true)
            {
                bool has = batches.MoveNext();
                if (_shards is not null)
                {
                    // Ranks may hold different numbers of eval batches; ZeRO-3's gathers need all of them in each forward.
                    if (!_parallel!.AnyRank(has)) break;
                    if (!has) { _shards.JoinForward(); continue; }
                }
                else if (!has)
                {
                    break;
                }
                var batch = batches.Current;
                using (batch)
                {
                    using var scope = NewDisposeScope();
                    var result = _model.ComputeLoss(batch);
                    long w = Math.Max(1, result.Tokens);
                    weighted += result.Loss.to(ScalarType.Float32).item<float>() * w;
                    weight += w;
                }
            }
        }
        finally
        {
            _model.Module.train();
        }
        if (_parallel is not null) (weighted, weight) = _parallel.SumEval(weighted, weight);
        return weight == 0 ? double.NaN : weighted / weight;
    }

    void RecordEval(double evalLoss)
    {
        _lastEvalLoss = evalLoss;
        var metrics = new StepMetrics { Kind = "eval", Step = _step, Epoch = _epoch, EvalLoss = evalLoss, TotalSteps = TotalSteps,
            Skipped = _scaler.SkippedSteps, SkippedBatches = _skippedBatches, SkippedSamples = SkippedSamples().Count };
        if (_writes) _metrics.Append(metrics);
        Progress?.Invoke(metrics);
    }

    /// <summary>The fp32 master copies of the trainable tensors, by parameter name.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> TrainableState() => _trainable.Select(t => new KeyValuePair<string, Tensor>(t.Name, t.Master));

    public string SaveCheckpoint(string name)
    {
        if (name is "final" or "best") EnsureFiniteWeights(name);
        var skippedSamples = SkippedSamples().Order(StringComparer.Ordinal).ToList();
        var manifest = new JsonObject {
            ["format"] = "visualchat-training-checkpoint/1",
            ["step"] = _step,
            ["epoch"] = _epoch,
            ["batch_in_epoch"] = _batchInEpoch,
            ["metrics"] = new JsonObject { ["loss"] = Finite(_lastLoss), ["eval_loss"] = Finite(_lastEvalLoss), ["best_eval_loss"] = Finite(_bestEvalLoss) },
            ["trainable"] = new JsonArray(_trainable.Select(t => (JsonNode)JsonValue.Create(t.Name)).ToArray()),
            ["lora"] = _config.LoraDim > 0 ? new JsonObject { ["lora_dim"] = _config.LoraDim, ["lora_alpha"] = _config.LoraAlpha ?? _config.LoraDim,
                ["lora_module_name"] = new JsonArray(_config.LoraModuleName.Select(n => (JsonNode)JsonValue.Create(n)).ToArray()) } : null,
            // Absolute paths: export and resume must work from any working directory.
            ["training_config"] = JsonNode.Parse(_config.WithAbsolutePaths().ToJson()),
        };
        foreach (var (key, value) in _manifestExtras) manifest[key] = value?.DeepClone();
        // ZeRO 1/2 moments are spread over the ranks: all gather them (a collective), rank 0 alone writes the usual layout.
        using var stateScope = NewDisposeScope();
        var optimizerState = _parallel is { Stage: > 0 } ? _parallel.GatherOptimizerState(_optimizer) : null;
        if (!_writes) return Path.Combine(RunDir, name);
        var path = CheckpointStore.Write(RunDir, name, folder =>
        {
            TensorFiles.SaveSafetensors(Path.Combine(folder, CheckpointStore.WeightsFile), TrainableState().Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().contiguous())));
            using (var scope = NewDisposeScope())
            {
                var state = optimizerState ?? _optimizer.StateTensors().ToList();
                TensorFiles.SaveSafetensors(Path.Combine(folder, CheckpointStore.OptimizerFile), state);
            }
            var trainerState = new JsonObject {
                ["global_step"] = _step, ["epoch"] = _epoch, ["batch_in_epoch"] = _batchInEpoch, ["seed"] = _config.Seed,
                ["total_steps"] = TotalSteps, ["loss_scale"] = _scaler.Scale, ["good_steps"] = _scaler.GoodSteps,
                ["skipped_steps"] = _scaler.SkippedSteps, ["skipped_batches"] = _skippedBatches,
                ["best_eval_loss"] = Finite(_bestEvalLoss), ["last_eval_loss"] = Finite(_lastEvalLoss), ["last_loss"] = Finite(_lastLoss),
                ["skipped_sample_count"] = skippedSamples.Count,
                // The global batch is per_device_train_batch_size × this: a resume on another rank count checks it.
                ["world_size"] = _parallel?.Size ?? 1,
                ["skipped_samples"] = new JsonArray(skippedSamples.Select(v => (JsonNode)JsonValue.Create(v)).ToArray()),
            };
            File.WriteAllText(Path.Combine(folder, CheckpointStore.StateFile), trainerState.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }, manifest);
        _checkpoints.Add(path);
        try { CurvePlot.Write(Path.Combine(RunDir, "loss.png"), _metrics.History); }
        catch (IOException e) { Log?.Invoke($"could not write loss.png: {e.Message}"); }
        Log?.Invoke($"checkpoint {path} (step {_step})");
        return path;
    }

    static JsonNode? Finite(double? value) => value is { } v && double.IsFinite(v) ? JsonValue.Create(v) : null;

    void ResumeIfAsked()
    {
        var resume = _config.Resume;
        if (resume is "none" or "") return;
        string? folder;
        if (resume == "auto")
        {
            folder = CheckpointStore.Latest(RunDir)?.Path;
            if (folder is null)
            {
                Log?.Invoke($"resume: auto found no complete checkpoint in {RunDir}; starting fresh");
                if (_writes) _metrics.TruncateAfter(-1);
                return;
            }
        }
        else
        {
            folder = resume;
        }

        if (CheckpointStore.TryRead(folder) is null)
            throw new TrainingConfigException($"Training config key 'resume' = {folder}: not a complete checkpoint folder (no {CheckpointStore.ManifestFile} with complete: true).");
        CheckResumeConfig(folder);
        Restore(folder);
        Log?.Invoke($"resumed from {folder} at step {_step}, epoch {_epoch}, batch {_batchInEpoch}");
    }

    /// <summary>
    /// Compares the checkpoint's training config with this run's: settings that change the data order, the model or the
    /// optimizer refuse to resume (unless resume_force), listing every difference; harmless ones are reported.
    /// </summary>
    void CheckResumeConfig(string folder)
    {
        var manifestPath = Path.Combine(folder, CheckpointStore.ManifestFile);
        TrainingConfig stored;
        try
        {
            var node = JsonNode.Parse(File.ReadAllText(manifestPath))?["training_config"];
            if (node is null) { Log?.Invoke($"resume: {manifestPath} stores no training config; cannot check it against this run's"); return; }
            stored = TrainingConfig.Parse(node.ToJsonString(), manifestPath);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new TrainingConfigException($"{manifestPath} is unreadable ({e.Message}); resume from another checkpoint or start a new run.");
        }
        var differences = GlobalBatchDifference(TrainingConfig.Differences(stored, _config), stored, folder);
        static string Show(IEnumerable<(string Key, string Stored, string Current, bool Safe)> list) =>
            string.Join(", ", list.Select(d => $"{d.Key} {d.Stored} → {d.Current}"));
        var unsafeChanges = differences.Where(d => !d.Safe).ToList();
        var safeChanges = differences.Where(d => d.Safe && d.Key is not ("resume" or "resume_force" or "overwrite")).ToList();
        if (unsafeChanges.Count > 0 && !_config.ResumeForce)
        {
            throw new TrainingConfigException(
                $"Cannot resume {folder}: these settings differ from the checkpoint's and change the data order, the model or the optimizer: {Show(unsafeChanges)}. " +
                "Resume with the run's settings, or pass --resume-force (set resume_force: true) to continue anyway (the result will differ from an uninterrupted run).");
        }

        if (unsafeChanges.Count > 0) Log?.Invoke($"resume: forced despite changed settings: {Show(unsafeChanges)}");
        if (safeChanges.Count > 0) Log?.Invoke($"resume: changed settings (allowed): {Show(safeChanges)}");
    }

    /// <summary>What decides the batch plan is the global batch, per_device_train_batch_size × ranks: across rank
    /// counts, a checkpoint of 2 ranks × 2 resumes on 1 rank × 4 (the same plan), and 2 ranks × 2 → 1 rank × 2 is an
    /// unsafe change. On the same rank count the per-device difference itself is reported.</summary>
    List<(string Key, string Stored, string Current, bool Safe)> GlobalBatchDifference(
        IReadOnlyList<(string Key, string Stored, string Current, bool Safe)> differences, TrainingConfig stored, string folder)
    {
        int storedRanks = 1;
        try
        {
            if (JsonNode.Parse(File.ReadAllText(Path.Combine(folder, CheckpointStore.StateFile)))?["world_size"] is { } node) storedRanks = node.GetValue<int>();
        }
        catch (Exception e) when (e is IOException or JsonException or InvalidOperationException or FormatException) { }   // Restore names a damaged state file
        int ranks = _parallel?.Size ?? 1;
        if (storedRanks == ranks) return differences.ToList();
        var list = differences.Where(d => d.Key != "per_device_train_batch_size").ToList();
        long before = (long)stored.PerDeviceTrainBatchSize * storedRanks, after = (long)_config.PerDeviceTrainBatchSize * ranks;
        list.Add(("global batch (per_device_train_batch_size × ranks)", $"{stored.PerDeviceTrainBatchSize} × {storedRanks}", $"{_config.PerDeviceTrainBatchSize} × {ranks}", before == after));
        return list;
    }

    /// <summary>Loads trainable weights, optimizer state, loss scale, counters and the data position.</summary>
    public void Restore(string folder)
    {
        using (var weights = TensorFiles.Open(Path.Combine(folder, CheckpointStore.WeightsFile)))
        using (no_grad())
        {
            foreach (var (name, parameter, master) in _trainable)
            {
                if (!weights.Contains(name)) throw new InvalidDataException($"Checkpoint {folder} has no tensor '{name}'; it was written with a different trainable selection.");
                using var loaded = weights.Read(name, ScalarType.Float32);
                master.copy_(loaded);
                if (!ReferenceEquals(master, parameter)) parameter.copy_(master);
            }
        }
        using (var optimizerState = TensorFiles.Open(Path.Combine(folder, CheckpointStore.OptimizerFile)))
        using (var scope = NewDisposeScope())
        {
            Func<string, Tensor?> read = name => optimizerState.Contains(name) ? optimizerState.Read(name) : null;
            _optimizer.LoadState(_parallel is { Stage: > 0 } ? _parallel.SliceOptimizerState(read) : read);
        }
        var statePath = Path.Combine(folder, CheckpointStore.StateFile);
        try
        {
            var state = JsonNode.Parse(File.ReadAllText(statePath))!.AsObject();
            if (state["seed"]!.GetValue<long>() != _config.Seed && !_config.ResumeForce)
                throw new TrainingConfigException($"Training config key 'seed' = {_config.Seed} differs from the checkpoint's seed {state["seed"]}; resuming would change the data order.");
            _step = state["global_step"]!.GetValue<long>();
            _epoch = state["epoch"]!.GetValue<int>();
            _batchInEpoch = state["batch_in_epoch"]!.GetValue<int>();
            _skippedBatches = state["skipped_batches"]!.GetValue<long>();
            _bestEvalLoss = state["best_eval_loss"]?.GetValue<double>();
            _lastEvalLoss = state["last_eval_loss"]?.GetValue<double>();
            _lastLoss = state["last_loss"]?.GetValue<double>();
            _scaler.Restore(state["loss_scale"]!.GetValue<double>(), state["good_steps"]!.GetValue<int>(), state["skipped_steps"]!.GetValue<int>());
            _restoredSkippedSamples.Clear();
            if (state["skipped_samples"] is JsonArray skipped)
                foreach (var entry in skipped) if (entry?.GetValue<string>() is { } text) _restoredSkippedSamples.Add(text);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException or FormatException or KeyNotFoundException)
        {
            throw new InvalidDataException($"{statePath} is damaged ({e.GetType().Name}: {e.Message}); resume from another checkpoint (--resume DIR) or start over with --overwrite.");
        }
        if (_writes) _metrics.TruncateAfter(_step);
    }

    /// <summary>ZeRO-3: partitions the frozen decoder layers of the model's language model across the ranks (after
    /// the trainable weights were broadcast, so all ranks agree) and turns gradient checkpointing on, which the
    /// layer-by-layer gathers need in backward.</summary>
    void ShardFrozenLayers()
    {
        var decoders = _model.Module.modules().OfType<VisualChat.Model.LlamaModel>().ToList();
        if (decoders.Count != 1)
            throw new TrainingConfigException($"distributed.zero_stage 3 partitions the frozen decoder layers of one LLaMA language model; this model has {decoders.Count}. Use zero_stage 2.");
        var decoder = decoders[0];
        if (!decoder.GradientCheckpointing) Log?.Invoke("ZeRO-3: gradient checkpointing turned on (each layer's weights are gathered again for its recomputation in backward)");
        decoder.GradientCheckpointing = true;
        try { _shards = new FrozenLayerShards(_parallel!.Communicator, decoder); }
        catch (ArgumentException e) { throw new TrainingConfigException(e.Message); }
        Log?.Invoke(FormattableString.Invariant(
            $"ZeRO-3: frozen decoder weights partitioned over {_parallel.Size} ranks: {_shards.ShardElements:N0} of {_shards.TotalElements:N0} elements ({_shards.DType}) kept on this rank, one layer gathered at a time"));
    }

    public void Dispose()
    {
        _shards?.Dispose();
        _optimizer.Dispose();
        _parallel?.Dispose();
        foreach (var (_, parameter, master) in _trainable)
            if (!ReferenceEquals(parameter, master)) master.Dispose();
    }
}
