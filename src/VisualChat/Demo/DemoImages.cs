using VisualChat.Data.Synthetic;
using static TorchSharp.torch;

namespace VisualChat.Demo;

/// <summary>Scenes to encoder pixels: rendered at 64 px (the generator's canvas), box-downsampled to the encoder's
/// size and normalized to [-1, 1].</summary>
public static class DemoImages
{
    public const int CanvasSize = 64;

    public static Tensor ToPixels(IReadOnlyList<ShapeScene> scenes, int imageSize)
    {
        if (CanvasSize % imageSize != 0)
            throw new ArgumentException($"DemoRecipe.ImageSize {imageSize} must divide the {CanvasSize}-px canvas.", nameof(imageSize));
        using var scope = NewDisposeScope();
        var bytes = new byte[scenes.Count * CanvasSize * CanvasSize * 3];
        for (int i = 0; i < scenes.Count; i++)
            scenes[i].Render(CanvasSize).CopyTo(bytes, i * CanvasSize * CanvasSize * 3);
        var pixels = tensor(bytes, [scenes.Count, CanvasSize, CanvasSize, 3]).permute(0, 3, 1, 2).to(ScalarType.Float32) / 255f;
        if (imageSize != CanvasSize) pixels = nn.functional.avg_pool2d(pixels, CanvasSize / imageSize);
        return ((pixels - 0.5f) / 0.5f).contiguous().MoveToOuterDisposeScope();
    }
}
