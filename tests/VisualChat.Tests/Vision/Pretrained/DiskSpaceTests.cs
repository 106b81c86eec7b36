using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Tests.Vision.Pretrained;

public class VisionPresetDiskSpaceTests
{
    [Fact]
    public void TooLittleFreeSpaceIsRefusedWithTheSizes()
    {
        var needed = VisionPresets.Info("qwen-vl-448").Bytes(ScalarType.Float32);
        Assert.InRange(needed, 7_000_000_000L, 8_000_000_000L);
        var error = Assert.Throws<IOException>(() => VisionPresets.EnsureFits("qwen-vl-448", ScalarType.Float32, needed, 1L << 30, "/mnt/small"));
        Assert.Contains("qwen-vl-448", error.Message);
        Assert.Contains("/mnt/small", error.Message);
        Assert.Contains("1.00 GiB", error.Message);
        VisionPresets.EnsureFits("qwen-vl-448", ScalarType.Float32, needed, needed, "/mnt/large");
    }
}
