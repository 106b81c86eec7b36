using VisualChat.Vision.Imaging;
namespace VisualChat.Demo;

/// <summary>
/// Every hyperparameter of the <c>vchat demo</c> run in one place: data sizes, the tiny CLIP encoder, the tiny LLaMA,
/// and the three training stages (vision pretraining, language pretraining, DeepSpeed-VisualChat projection training).
/// </summary>
public sealed record DemoRecipe
{
    public int Seed { get; init; } = 1234;
    /// <summary>Intra-op threads for libtorch. One: the demo's matrices are tiny, so intra-op parallelism costs more in
    /// synchronisation than it gains (measured 2 threads ≈ 15× more CPU per LM step on a loaded 2-core machine), and with
    /// one thread the run's wall time equals its CPU time whatever else the machine is doing.</summary>
    public int Threads { get; init; } = 1;
    /// <summary>Run vision and LM pretraining at the same time on two threads (each single-threaded inside libtorch):
    /// they are independent, so on a 2-core machine they take the time of the longer one.</summary>
    public bool ParallelPretraining { get; init; } = true;

    // Images: scenes are drawn at 64 px and box-downsampled to the encoder's input size.
    public int ImageSize { get; init; } = 32;
    public int PatchSize { get; init; } = 8;

    // Vision encoder (CLIP architecture) and its pretraining on kind / colour / count labels.
    public int VisionWidth { get; init; } = 64;
    public int VisionLayers { get; init; } = 2;
    public int VisionHeads { get; init; } = 4;
    public int VisionSteps { get; init; } = 5000;
    public int VisionBatch { get; init; } = 64;
    public double VisionLearningRate { get; init; } = 3e-3;

    // Tokenizer: byte-fallback BPE learned from template text.
    public int BpeMerges { get; init; } = 160;
    /// <summary>System prompt of the template; null renders none (the long DSVC default costs ~40 tokens a sample).</summary>
    public string? SystemPrompt { get; init; }

    /// <summary>LM positions per image, 1 or 4: the perceiver's query grid is √ of this, and in LM pretraining the slots
    /// hold the summed description (1) or the image marker, count, colour and kind one per slot (4).</summary>
    public int ImageTokens { get; init; } = 4;
    /// <summary>Image descriptions use the answers' own tokens where single pieces exist (see <see cref="DescriptionVocabulary.From"/>).</summary>
    public bool DescribeWithAnswerTokens { get; init; } = true;

    // Language model (LLaMA architecture) and its pretraining on conversations with described images.
    public int LmHidden { get; init; } = 64;
    public int LmLayers { get; init; } = 3;
    public int LmHeads { get; init; } = 4;
    public int LmIntermediate { get; init; } = 192;
    /// <summary>2,600: seed 1234's LM was still improving at 2,000 (final loss 0.031 vs 0.016 for seed 1) and its DSVC eval
    /// loss stalled at 0.117; with 2,600 it reached 0.09.</summary>
    public int LmSteps { get; init; } = 2600;
    public int LmBatch { get; init; } = 32;
    public double LmLearningRate { get; init; } = 3e-3;

    // DeepSpeed-VisualChat stage, run by the project's trainer (`vchat train`): frozen encoder + frozen LM, MMCA; the
    // perceiver projection and the token embeddings train (the model's default trainable set).
    /// <summary>Conversations written to the training JSONL (a <see cref="ChatEvalFraction"/> share is held out by the
    /// data pipeline for the trainer's eval loss). 6,000: with 3,000 the DSVC stage over-fits (train loss ≈ 0.03, eval
    /// ≈ 0.09–0.12); twice the data gave seed 1234 92.3 % instead of 87.9 % at the same steps. Seeds still differ by
    /// several points (README, Demo).</summary>
    public int ChatConversations { get; init; } = 6000;
    public double ChatEvalFraction { get; init; } = 0.04;
    /// <summary>1,300 (≈ 7 epochs of 5,760 conversations): the time the longer LM pretraining took is given back here.</summary>
    public int ChatSteps { get; init; } = 1300;
    public int ChatBatch { get; init; } = 32;
    public double ChatLearningRate { get; init; } = 2e-3;
    /// <summary>Adam betas of the DSVC stage. The paper uses (0, 0.95); with β1 = 0 this tiny run reached 80 % instead of
    /// 95 % in the same steps (measured), so the demo keeps momentum.</summary>
    public double ChatBeta1 { get; init; } = 0.9;
    public double ChatBeta2 { get; init; } = 0.95;
    /// <summary>LoRA rank on the frozen LM's linear layers in the DSVC stage (0: LM frozen, only projection and token
    /// embeddings train).</summary>
    public int ChatLoraDim { get; init; }
    /// <summary>Which LM linear layers get LoRA (<c>lora_module_name</c>: substrings of module names).</summary>
    public string[] ChatLoraModules { get; init; } = ["lm.model.layers."];

    public int WarmupSteps { get; init; } = 30;
    public double WeightDecay { get; init; } = 0.0;

    // Evaluation on held-out conversations (a different generator seed), greedy decoding of the saved model.
    public int EvalConversations { get; init; } = 600;

    /// <summary>
    /// This recipe with <c>Name=value</c> overrides (property names as in <c>result.json</c>, case-insensitive; values
    /// in JSON syntax, bare strings allowed). An unknown name or a value of the wrong type is an error naming it.
    /// </summary>
    public DemoRecipe With(IEnumerable<string> assignments)
    {
        var json = System.Text.Json.JsonSerializer.SerializeToNode(this)!.AsObject();
        foreach (var assignment in assignments)
        {
            int eq = assignment.IndexOf('=');
            if (eq <= 0) throw new ArgumentException($"Recipe override '{assignment}' is not Name=value.");
            var name = assignment[..eq].Trim();
            var key = json.Select(kv => kv.Key).FirstOrDefault(k => string.Equals(k, name, StringComparison.OrdinalIgnoreCase))
                ?? throw new ArgumentException($"Recipe override '{assignment}': no recipe setting '{name}'. Settings: {string.Join(", ", json.Select(kv => kv.Key))}.");
            var text = assignment[(eq + 1)..].Trim();
            System.Text.Json.Nodes.JsonNode? value;
            try { value = System.Text.Json.Nodes.JsonNode.Parse(text); }
            catch (System.Text.Json.JsonException) { value = System.Text.Json.Nodes.JsonValue.Create(text); }
            json[key] = value;
        }
        try
        {
            return System.Text.Json.JsonSerializer.Deserialize<DemoRecipe>(json) ?? throw new ArgumentException("Recipe overrides produced no recipe.");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new ArgumentException($"Recipe overrides: {e.Message} (check the value's type: number, true/false, or text).");
        }
    }

    /// <summary>The full recipe (target: ≥ 90 % exact match within 10 minutes on 2 CPU cores).</summary>
    public static DemoRecipe Default() => new();

    /// <summary>A reduced recipe for tests and smoke runs (about 1.5 min of CPU; 56 % exact match for seed 1234).</summary>
    public static DemoRecipe Quick() => new()
    {
        VisionSteps = 400, VisionBatch = 32,
        BpeMerges = 120,
        LmHidden = 48, LmLayers = 2, LmIntermediate = 128, LmSteps = 700, LmBatch = 16,
        ChatConversations = 300, ChatSteps = 200, ChatBatch = 16,
        EvalConversations = 120,
    };
}
