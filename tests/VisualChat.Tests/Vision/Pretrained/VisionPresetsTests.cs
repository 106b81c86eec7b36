using TorchSharp;
using VisualChat.Benchmarks;
using VisualChat.Tests.Vision.Encoders;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Imaging;
using VisualChat.Vision.Projection;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Pretrained;

public class VisionPresetsTests
{
    [Theory]
    [InlineData("tiny")]
    [InlineData("qwen-tiny")]
    public void LayoutListsExactlyTheModuleStateDict(string preset)
    {
        var info = VisionPresets.Info(preset);
        using var module = (nn.Module)VisionPresets.Create(preset);
        var actual = module.state_dict().ToDictionary(p => p.Key, p => p.Value.shape);
        Assert.Equal(actual.Keys.OrderBy(k => k, StringComparer.Ordinal), info.Tensors.Select(t => t.Name).OrderBy(k => k, StringComparer.Ordinal));
        foreach (var spec in info.Tensors)
            Assert.Equal(actual[spec.Name], spec.Shape);
        Assert.Equal(module.parameters().Sum(p => p.numel()), info.Parameters);
    }

    [Theory]
    [InlineData("clip-vit-large-patch14", 224, 257, 1024, 303_179_776L)]
    [InlineData("openai/clip-vit-large-patch14-336", 336, 577, 1024, 303_507_456L)]
    public void ClipPresetsDescribeHuggingFaceSizesWithoutAllocating(string preset, int imageSize, int tokens, int width, long parameters)
    {
        var info = VisionPresets.Info(preset);
        Assert.Equal((imageSize, tokens, width), (info.Output.ImageSize, info.Output.OutputTokens, info.Output.OutputWidth));
        Assert.Equal(parameters, info.Parameters);
        Assert.Equal(parameters * 4, info.Bytes(ScalarType.Float32));
        Assert.Equal(parameters * 2, info.Bytes(ScalarType.BFloat16));
        Assert.Equal(imageSize, info.Processor.CropOutputSize().Height);
        var text = VisionPresets.Describe(preset);
        Assert.Contains($"{tokens} tokens x {width}", text);
        Assert.Contains(parameters.ToString("N0", System.Globalization.CultureInfo.InvariantCulture), text);
    }

    [Fact]
    public void QwenPresetIsDeepSpeedVisualChatsEncoder()
    {
        var info = VisionPresets.Info("qwen-vl-448");
        Assert.Equal((448, 256, 4096), (info.Output.ImageSize, info.Output.OutputTokens, info.Output.OutputWidth));
        Assert.InRange(info.Parameters, 1_850_000_000L, 1_950_000_000L);
        Assert.DoesNotContain(info.Tensors, t => t.Name == "proj");
        Assert.Contains(info.Tensors, t => t.Name == "attn_pool.kv_proj.weight" && t.Shape.SequenceEqual(new long[] { 4096, 1664 }));
        Assert.Equal(448, info.Processor.CropOutputSize().Height);
        Assert.True(VisionBenchmark.IsHeavy("qwen-vl-448"));
        Assert.False(VisionBenchmark.IsHeavy("clip-vit-large-patch14"));
    }

    [Fact]
    public void UnknownPresetListsTheKnownOnes()
    {
        var error = Assert.Throws<ArgumentException>(() => VisionPresets.Info("clip-huge"));
        Assert.Contains("clip-vit-large-patch14", error.Message);
    }

    [Fact]
    public void InitialisationFollowsHuggingFace()
    {
        using var module = (nn.Module)VisionPresets.Create("qwen-tiny", seed: 1);
        var state = module.state_dict();
        Assert.True(state["ln_pre.weight"].eq(1).all().item<bool>());
        Assert.True(state["transformer.resblocks.0.attn.in_proj.bias"].eq(0).all().item<bool>());
        using var sinCos = VisionPositionalEmbeddings.Get2dSinCos(48, 2);
        Assert.True(PretrainedTestSupport.Same(state["attn_pool.pos_embed"], sinCos));
        var std = state["transformer.resblocks.0.mlp.c_fc.weight"].std().item<float>();
        Assert.InRange(std, 0.015f, 0.025f);
        using var again = (nn.Module)VisionPresets.Create("qwen-tiny", seed: 1);
        using var other = (nn.Module)VisionPresets.Create("qwen-tiny", seed: 2);
        Assert.True(PretrainedTestSupport.Same(again.state_dict()["attn_pool.query"], state["attn_pool.query"]));
        Assert.False(PretrainedTestSupport.Same(other.state_dict()["attn_pool.query"], state["attn_pool.query"]));
    }

    [Fact]
    public void FlopsCountTheMatmuls()
    {
        // CLIP ViT-L/14 at 224: 24 layers × (2·257·(4·1024² + 2·1024·4096) + 4·257²·1024) + patchify 2·256·588·1024.
        double expected = 24 * (2.0 * 257 * (4.0 * 1024 * 1024 + 2.0 * 1024 * 4096) + 4.0 * 257 * 257 * 1024) + 2.0 * 256 * 588 * 1024;
        Assert.Equal(expected, VisionBenchmark.FlopsPerImage(VisionPresets.Info("clip-vit-large-patch14")));
        var clip = VisionBenchmark.FlopsPerImage(VisionPresets.Info("clip-vit-large-patch14"));
        var qwen = VisionBenchmark.FlopsPerImage(VisionPresets.Info("qwen-vl-448"));
        Assert.InRange(qwen / clip, 15, 30);
    }

    [Fact]
    public void TinyBenchmarkRunsAndReportsTheRoofline()
    {
        var result = VisionBenchmark.Run("tiny", batch: 2, repeats: 1, gemmFlopsPerSecond: 1e9);
        Assert.Equal((17, 32, 2), (result.Tokens, result.Width, result.Batch));
        Assert.True(result.ImagesPerSecond > 0);
        Assert.Equal(result.FlopsPerImage * result.ImagesPerSecond / 1e9, result.Utilisation, 9);
    }

    [Fact]
    public void ImageFileThroughProcessorEncoderAndProjection()
    {
        var imageDir = VisionTestSupport.SharedPath("data", "dsvc-eval");
        var file = Directory.EnumerateFiles(imageDir, "*.jpg", SearchOption.AllDirectories).OrderBy(f => f, StringComparer.Ordinal).First();
        var info = VisionPresets.Info("tiny");
        using var encoderModule = (nn.Module)VisionPresets.Create("tiny", seed: 4);
        var encoder = (IVisionEncoder)encoderModule;
        var image = ImageLoader.Load(file);
        using var pixels = new ClipImageProcessor(info.Processor).Preprocess(image).unsqueeze(0);
        Assert.Equal(new long[] { 1, 3, 32, 32 }, pixels.shape);
        const int lmWidth = 64;
        var projection = ProjectionFactory.Create(ProjectionKind.Baseline, encoder.OutputWidth, lmWidth);
        using var projectionModule = (nn.Module)projection;
        using var features = encoder.Encode(pixels);
        using var embedded = projection.Project(features);
        Assert.Equal(new long[] { 1, info.Output.OutputTokens, lmWidth }, embedded.shape);
        Assert.False(embedded.isnan().any().item<bool>());
    }
}
