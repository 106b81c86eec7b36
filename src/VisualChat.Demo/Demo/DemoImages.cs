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
        // Normalized on the managed side: [0, 255] -> [-1, 1] is linear, so it commutes with the box filter, and no
        // tensor-by-scalar op is needed (one run crashed in libtorch's Scalar conversion of such an op).
        int plane = CanvasSize * CanvasSize * 3;
        var values = new float[scenes.Count * plane];
        for (int i = 0; i < scenes.Count; i++)
        {
            var rgb = scenes[i].Render(CanvasSize);
            for (int j = 0; j < plane; j++) values[i * plane + j] = rgb[j] / 127.5f - 1f;
        }
        var pixels = tensor(values, [scenes.Count, CanvasSize, CanvasSize, 3]).permute(0, 3, 1, 2);
        if (imageSize != CanvasSize) pixels = nn.functional.avg_pool2d(pixels, CanvasSize / imageSize);
        return pixels.contiguous().MoveToOuterDisposeScope();
    }
}
