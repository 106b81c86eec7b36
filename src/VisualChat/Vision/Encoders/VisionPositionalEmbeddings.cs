using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Vision.Encoders;

/// <summary>Fixed and resized absolute position tables used by Qwen-VL's encoder and DeepSpeed-VisualChat's perceiver.</summary>
public static class VisionPositionalEmbeddings
{
    /// <summary>
    /// MAE's get_2d_sincos_pos_embed (as copied into Qwen-VL and DeepSpeed-VisualChat): [grid², embedDim] fp32 where
    /// row r = i·grid + j (i row, j column) is [sincos(embedDim/2, j), sincos(embedDim/2, i)] and
    /// sincos(d, p) = [sin(p·ω_k), cos(p·ω_k)], ω_k = 10000^(−k/(d/2)), k &lt; d/2. The column index comes first because
    /// the original builds its grid with np.meshgrid(grid_w, grid_h).
    /// </summary>
    public static Tensor Get2dSinCos(int embedDim, int gridSize)
    {
        if (embedDim <= 0 || embedDim % 4 != 0)
            throw new ArgumentException($"2-D sin-cos embedding needs an embedding width divisible by 4; got {embedDim}.", nameof(embedDim));
        if (gridSize <= 0)
            throw new ArgumentException($"gridSize must be positive; got {gridSize}.", nameof(gridSize));
        var half = embedDim / 2;
        var quarter = embedDim / 4;
        var omega = new float[quarter];
        for (var k = 0; k < quarter; k++)
            omega[k] = (float)(1.0 / Math.Pow(10000.0, (float)k / quarter));
        var values = new float[gridSize * gridSize * embedDim];
        for (var i = 0; i < gridSize; i++)
        {
            for (var j = 0; j < gridSize; j++)
            {
                var row = (i * gridSize + j) * embedDim;
                for (var k = 0; k < quarter; k++)
                {
                    var column = (float)j * omega[k];
                    var rowAngle = (float)i * omega[k];
                    values[row + k] = MathF.Sin(column);
                    values[row + quarter + k] = MathF.Cos(column);
                    values[row + half + k] = MathF.Sin(rowAngle);
                    values[row + half + quarter + k] = MathF.Cos(rowAngle);
                }
            }
        }

        return tensor(values).view(gridSize * gridSize, embedDim);
    }

    /// <summary>
    /// Qwen-VL's get_abs_pos: a square table [L, C] resized to [targetTokens, C] by bicubic interpolation
    /// (align_corners false) over its √L×√L grid, computed in fp32 and cast back; returned as is when sizes agree.
    /// </summary>
    public static Tensor GetAbsPos(Tensor absPos, long targetTokens)
    {
        var sourceSize = (long)Math.Sqrt(absPos.shape[0]);
        var targetSize = (long)Math.Sqrt(targetTokens);
        if (sourceSize == targetSize) return absPos.alias();
        using var scope = NewDisposeScope();
        var channels = absPos.shape[1];
        var grid = absPos.to(ScalarType.Float32).narrow(0, 0, sourceSize * sourceSize)
            .reshape(1, sourceSize, sourceSize, channels).permute(0, 3, 1, 2);
        var resized = nn.functional.interpolate(grid, size: new[] { targetSize, targetSize },
            mode: InterpolationMode.Bicubic, align_corners: false);
        return resized.permute(0, 2, 3, 1).flatten(0, 2).to(absPos.dtype).MoveToOuterDisposeScope();
    }
}
