using VisualChat.Demo;
using VisualChat.Model;

namespace VisualChat.Benchmarks.Ablation;

/// <summary>
/// The budget every attention mode gets in <c>vchat bench ablation</c>. Sizes and learning rates come from
/// <see cref="Recipe"/> (the demo's hyperparameters); the step counts here override its stage steps. Ablation seed
/// <c>s</c> runs the recipe with <c>Seed = 1000·s</c>, so the generator seeds derived from it (seed + 1, + 2, …) never
/// coincide between ablation seeds.
/// </summary>
public sealed record AblationSettings
{
    /// <summary>The demo's recipe with the LM frozen in the DSVC stage (no LoRA): the ablation compares how each attention
    /// mode reads images into an LM that cannot adapt, which is what its figures (README) measure.</summary>
    public DemoRecipe Recipe { get; init; } = DemoRecipe.Default() with { ChatLoraDim = 0 };
    /// <summary>Seeds 1..Seeds; each pretrains its own encoder and LM and trains every mode.</summary>
    public int Seeds { get; init; } = 3;
    /// <summary>DeepSpeed-VisualChat-stage steps per mode.</summary>
    public int Steps { get; init; } = 600;
    /// <summary>Text-only LM pretraining steps per seed.</summary>
    public int LmSteps { get; init; } = 1200;
    /// <summary>Vision pretraining steps per seed.</summary>
    public int VisionSteps { get; init; } = 1200;
    /// <summary>Eval-loss measurements after step 0 (evenly spaced; the last is after the final step).</summary>
    public int EvalPoints { get; init; } = 8;
    /// <summary>Training conversations of the DSVC stage (a fixed pool, sampled in the same order for every mode).</summary>
    public int Conversations { get; init; } = 3000;
    /// <summary>Held-out conversations (a different generator seed) for exact match. Eval loss is the trainer's, on the
    /// <see cref="DemoRecipe.ChatEvalFraction"/> share the data pipeline holds out of <see cref="Conversations"/>.</summary>
    public int EvalConversations { get; init; } = 400;
    /// <summary>Independent jobs (pretraining stages, mode runs) trained at the same time, each single-threaded in libtorch.
    /// Default 1: with two training threads, a GC triggered by one lets the finalizer free a TorchSharp Scalar that the
    /// other is still passing to libtorch (implicit <c>tensor * double</c> Scalars in the model code); seen here as
    /// "Unknown scalar type" in ClipAttention within 500 vision steps, and it can as well silently read a freed value.
    /// Use 2 only once the model code keeps its Scalars alive.</summary>
    public int Workers { get; init; } = 1;
    public IReadOnlyList<AttentionMode> Modes { get; init; } = [AttentionMode.Causal, AttentionMode.CausalCross, AttentionMode.Mmca];

    /// <summary>A budget for tests and smoke runs: one seed, seconds per job.</summary>
    public static AblationSettings Quick() => new()
    {
        Recipe = DemoRecipe.Quick() with { VisionBatch = 16, LmBatch = 8, ChatBatch = 8, ChatEvalFraction = 0.1, ChatLoraDim = 0 },
        Seeds = 1, Steps = 24, LmSteps = 40, VisionSteps = 30, EvalPoints = 3, Conversations = 64, EvalConversations = 48,
    };

    /// <summary>The recipe of ablation seed <paramref name="seed"/> with this budget's step counts.</summary>
    public DemoRecipe RecipeFor(int seed) => Recipe with
    {
        Seed = 1000 * seed, Threads = 1, VisionSteps = VisionSteps, LmSteps = LmSteps, ChatSteps = Steps,
        ChatConversations = Conversations, EvalConversations = EvalConversations,
    };

    /// <summary>The trainer's eval_every_steps: <see cref="Steps"/> / <see cref="EvalPoints"/>.</summary>
    public int EvalEvery => Steps / EvalPoints;

    /// <summary>Steps after which eval loss is measured: 0 (before training) and every <see cref="EvalEvery"/> steps up to <see cref="Steps"/>.</summary>
    public int[] EvalSteps() => Enumerable.Range(0, EvalPoints + 1).Select(i => i * EvalEvery).ToArray();

    public AblationSettings Validated()
    {
        if (Seeds < 1) throw new ArgumentException($"--seeds must be at least 1 (got {Seeds}).");
        if (Steps < 1) throw new ArgumentException($"--steps must be at least 1 (got {Steps}).");
        if (LmSteps < 1) throw new ArgumentException($"--lm-steps must be at least 1 (got {LmSteps}).");
        if (VisionSteps < 1) throw new ArgumentException($"--vision-steps must be at least 1 (got {VisionSteps}).");
        if (EvalPoints < 1) throw new ArgumentException($"The number of eval points must be at least 1 (got {EvalPoints}).");
        if (Steps % EvalPoints != 0) throw new ArgumentException($"--steps ({Steps}) must be a multiple of the {EvalPoints} eval points, so that eval loss is measured at the last step.");
        if (Workers < 1) throw new ArgumentException($"--workers must be at least 1 (got {Workers}).");
        if (Conversations < 1 || EvalConversations < 1) throw new ArgumentException("The ablation needs at least one training and one held-out conversation.");
        if (Modes.Count == 0 || Modes.Distinct().Count() != Modes.Count) throw new ArgumentException("The ablation needs distinct attention modes.");
        return this;
    }
}
