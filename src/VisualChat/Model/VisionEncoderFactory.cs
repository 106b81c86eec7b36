using TorchSharp;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// The one place a <c>vision_encoder</c> name of <c>visualchat.json</c> becomes a randomly initialised encoder. Weights
/// follow Hugging Face's init for these towers (<see cref="VisionWeightInit"/>), drawn from the caller's generator.
/// </summary>
public static class VisionEncoderFactory
{
    static readonly Dictionary<string, Func<VisualChatConfig, IVisionEncoder>> Builders = new(StringComparer.Ordinal)
    {
        [ClipVisionModel.KindName] = config => new ClipVisionModel(config.ClipVision
            ?? throw new ArgumentException($"{VisualChatConfig.FileName}: vision_encoder is \"clip\" but no CLIP vision config (vision/config.json) was given.", nameof(config)),
            config.VisionFeatureSelect, config.DropClsToken),
        [QwenVisionTransformer.KindName] = config => new QwenVisionTransformer(config.QwenVision
            ?? throw new ArgumentException($"{VisualChatConfig.FileName}: vision_encoder is \"qwen\" but no Qwen vision config (vision/config.json) was given.", nameof(config))),
    };

    /// <summary>The encoder names a config may use.</summary>
    public static IReadOnlyCollection<string> Kinds => Builders.Keys;

    public static IVisionEncoder Create(VisualChatConfig config, Generator generator)
    {
        if (!Builders.TryGetValue(config.VisionEncoder, out var build))
            throw new ArgumentException($"{VisualChatConfig.FileName}: vision_encoder '{config.VisionEncoder}' is unknown; use one of {string.Join(", ", Builders.Keys.Select(k => $"\"{k}\""))}.", nameof(config));
        var encoder = build(config);
        VisionWeightInit.Initialize((nn.Module)encoder, generator);
        return encoder;
    }
}
