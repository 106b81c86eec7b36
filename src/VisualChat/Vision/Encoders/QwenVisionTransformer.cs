using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Vision.Imaging;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>
/// Qwen-VL's visual encoder as DeepSpeed-VisualChat extracts it (utils/model/third_party_model/qwen_clip):
/// conv1 (bias-free patchify) → + positional_embedding (bicubic-resized to the patch grid) → ln_pre →
/// transformer.resblocks → attn_pool (Resampler, n_queries tokens) → ln_post [→ x @ proj only when
/// <see cref="QwenVisionConfig.UseOutputProjection"/>]. A 448-px image gives 1024 patches and 256 tokens of width 4096.
/// state_dict keys carry no prefix, matching DSVC's qwen_clip/pytorch_model.bin (saved with strict loading and no proj).
/// The original Qwen-VL checkpoint prefixes every key with "transformer.visual." and also holds
/// "transformer.visual.proj": strip the prefix and drop proj (DSVC's extraction did exactly that), or build with
/// UseOutputProjection to keep it.
/// </summary>
public sealed class QwenVisionTransformer : nn.Module<Tensor, Tensor>, IVisionEncoder
{
    /// <summary>The key prefix of the visual tower inside a full Qwen-VL / Qwen-VL-Chat checkpoint.</summary>
    public const string QwenVlCheckpointPrefix = "transformer.visual.";

    private readonly Conv2d conv1;
    private readonly Parameter positional_embedding;
    private readonly LayerNorm ln_pre;
    private readonly QwenTransformerBlock transformer;
    private readonly Resampler attn_pool;
    private readonly LayerNorm ln_post;
    private readonly Parameter? proj;

    public QwenVisionTransformer(QwenVisionConfig config, string name = "QwenVisionTransformer") : base(name)
    {
        Config = config.Validated();
        conv1 = nn.Conv2d(3, config.Width, config.PatchSize, stride: config.PatchSize, bias: false);
        positional_embedding = new Parameter(ScaledRandn(config.PositionalEmbeddingSize, config.Width, Math.Pow(config.Width, -0.5)));
        ln_pre = nn.LayerNorm(config.Width, config.LayerNormEps);
        transformer = new QwenTransformerBlock(config);
        attn_pool = new Resampler(config.QueryGrid, config.OutputDim, config.EffectiveResamplerHeads, config.Width, config.LayerNormEps);
        ln_post = nn.LayerNorm(config.OutputDim, config.LayerNormEps);
        proj = config.UseOutputProjection
            ? new Parameter(ScaledRandn(config.OutputDim, config.OutputDim, Math.Pow(config.OutputDim, -0.5)))
            : null;
        RegisterComponents();
        Freeze();
    }

    private static Tensor ScaledRandn(long rows, long columns, double scale)
    {
        using var held = scale.ToScalar();   // held: TorchSharp does not keep Scalars alive during the native call
        using var noise = randn(rows, columns);
        return noise.mul(held);
    }

    public QwenVisionConfig Config { get; }
    public int OutputTokens => Config.NQueries;
    public int OutputWidth => Config.OutputDim;
    public int ImageSize => Config.ImageSize;
    public string EncoderId =>
        $"qwen-vision:{Config.ImageSize}/{Config.PatchSize}/{Config.Width}x{Config.Layers}:{Config.NQueries}x{Config.OutputDim}:{(Config.UseOutputProjection ? "proj" : "noproj")}";

    public const string KindName = "qwen";
    public string Kind => KindName;
    object IVisionEncoder.Config => Config;
    public void SaveConfig(string path) => Config.Save(path);
    /// <summary>Qwen-VL's 448 px preprocessing, or the same recipe at the encoder's size.</summary>
    public ImageProcessorConfig DefaultImageProcessor => VisionEncoderFolder.ProcessorFor(Config.ImageSize);

    public static VisionOutputDescription DescribeOutput(QwenVisionConfig config)
    {
        config.Validated();
        return new VisionOutputDescription(config.ImageSize, config.PatchGrid, config.NQueries, config.OutputDim);
    }

    /// <summary>Maps a key of an original Qwen-VL checkpoint to this module's key; null for keys outside the visual tower.</summary>
    public static string? MapQwenVlCheckpointKey(string key) =>
        key.StartsWith(QwenVlCheckpointPrefix, StringComparison.Ordinal) ? key[QwenVlCheckpointPrefix.Length..] : null;

    public bool IsFrozen => FrozenModule.IsFrozen(this);
    public void Freeze() => FrozenModule.SetTrainable(this, false);

    /// <summary>Makes every weight trainable except the resampler's fixed sin-cos <c>pos_embed</c>, as in Qwen-VL.</summary>
    public void Unfreeze()
    {
        foreach (var (parameterName, parameter) in named_parameters())
            parameter.requires_grad = parameterName != "attn_pool.pos_embed";
    }

    public override Tensor forward(Tensor pixels)
    {
        if (pixels.dim() != 4 || pixels.shape[1] != 3 || pixels.shape[2] != Config.ImageSize || pixels.shape[3] != Config.ImageSize)
        {
            throw new ArgumentException(
                $"Qwen vision pixel tensor has shape [{string.Join(", ", pixels.shape)}]; expected [N, 3, {Config.ImageSize}, {Config.ImageSize}].",
                nameof(pixels));
        }

        using var scope = NewDisposeScope();
        var patches = conv1.forward(pixels.to(conv1.weight!.dtype));
        var x = patches.reshape(patches.shape[0], patches.shape[1], -1).permute(0, 2, 1);
        x = x.add(VisionPositionalEmbeddings.GetAbsPos(positional_embedding, x.shape[1]), TorchScalars.One);
        x = ln_pre.forward(x);
        x = transformer.forward(x);
        x = ln_post.forward(attn_pool.forward(x));
        if (proj is not null) x = x.matmul(proj);
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>[N, 3, S, S] → [N, n_queries, output_dim], under no_grad while frozen.</summary>
    public Tensor Encode(Tensor pixels) => FrozenModule.Run(this, () => forward(pixels));

    /// <summary>Loads DSVC's extracted encoder folder or an original Qwen-VL checkpoint folder; see <see cref="VisionEncoderFolder.Load"/>.</summary>
    public static QwenVisionTransformer FromPretrained(string folder, Device? device = null)
    {
        var loaded = VisionEncoderFolder.Load(folder, device);
        if (loaded.Encoder is QwenVisionTransformer qwen) return qwen;
        ((IDisposable)loaded.Encoder).Dispose();
        throw new InvalidDataException($"'{folder}' holds a {loaded.Layout} checkpoint, not Qwen-VL; load it with VisionEncoderFolder.Load.");
    }
}
