namespace VisualChat.Data.Synthetic;

public enum ShapeKind { Circle, Square, Triangle, Cross }

public enum ShapeColor { Red, Green, Blue, Yellow, Purple, Orange }

/// <summary>One generated picture: <see cref="Count"/> copies of one shape in one colour, each with its own size and place.</summary>
public sealed record ShapeScene(ShapeKind Kind, ShapeColor Color, IReadOnlyList<(int X, int Y, int Radius)> Instances)
{
    public int Count => Instances.Count;

    public static string Name(ShapeKind kind) => kind.ToString().ToLowerInvariant();
    public static string Name(ShapeColor color) => color.ToString().ToLowerInvariant();

    static readonly Dictionary<ShapeColor, (byte R, byte G, byte B)> Palette = new()
    {
        [ShapeColor.Red] = (220, 30, 30),
        [ShapeColor.Green] = (30, 170, 50),
        [ShapeColor.Blue] = (30, 60, 220),
        [ShapeColor.Yellow] = (235, 200, 20),
        [ShapeColor.Purple] = (140, 40, 170),
        [ShapeColor.Orange] = (245, 130, 20),
    };

    /// <summary>Places 1..maxCount instances in distinct quadrants with random sizes and jitter.</summary>
    public static ShapeScene Random(Random random, int size, int maxCount = 4)
    {
        var kind = (ShapeKind)random.Next(Enum.GetValues<ShapeKind>().Length);
        var color = (ShapeColor)random.Next(Enum.GetValues<ShapeColor>().Length);
        int count = random.Next(1, Math.Min(maxCount, 4) + 1);
        var quadrants = Enumerable.Range(0, 4).OrderBy(_ => random.Next()).Take(count);
        int cell = size / 2;
        var instances = new List<(int, int, int)>();
        foreach (var q in quadrants)
        {
            int radius = random.Next(Math.Max(2, cell / 5), Math.Max(3, cell * 2 / 5) + 1);
            int slack = Math.Max(0, cell / 2 - radius);
            int x = (q % 2) * cell + cell / 2 + random.Next(-slack, slack + 1);
            int y = (q / 2) * cell + cell / 2 + random.Next(-slack, slack + 1);
            instances.Add((x, y, radius));
        }
        return new ShapeScene(kind, color, instances);
    }

    /// <summary>Renders on a white background as interleaved RGB bytes.</summary>
    public byte[] Render(int size)
    {
        var rgb = new byte[size * size * 3];
        Array.Fill(rgb, (byte)255);
        var (r, g, b) = Palette[Color];
        foreach (var (cx, cy, radius) in Instances)
        {
            for (int y = Math.Max(0, cy - radius); y <= Math.Min(size - 1, cy + radius); y++)
            {
                for (int x = Math.Max(0, cx - radius); x <= Math.Min(size - 1, cx + radius); x++)
                {
                    if (!Covers(x - cx, y - cy, radius)) continue;
                    int o = (y * size + x) * 3;
                    rgb[o] = r; rgb[o + 1] = g; rgb[o + 2] = b;
                }
            }
        }
        return rgb;
    }

    /// <summary>Renders at <paramref name="size"/> × <paramref name="supersample"/> and box-filters down to
    /// <paramref name="size"/> (rounded bytes): anti-aliased small images whose pixels are the mean of the large render's.</summary>
    public byte[] Render(int size, int supersample)
    {
        if (supersample < 1) throw new ArgumentOutOfRangeException(nameof(supersample), supersample, "The supersampling factor must be at least 1.");
        if (supersample == 1) return Render(size);
        int large = size * supersample, area = supersample * supersample;
        var rgb = Render(large);
        var small = new byte[size * size * 3];
        for (int y = 0; y < size; y++)
        {
            for (int x = 0; x < size; x++)
            {
                for (int c = 0; c < 3; c++)
                {
                    int sum = 0;
                    for (int dy = 0; dy < supersample; dy++)
                    {
                        for (int dx = 0; dx < supersample; dx++)
                            sum += rgb[((y * supersample + dy) * large + x * supersample + dx) * 3 + c];
                    }

                    small[(y * size + x) * 3 + c] = (byte)((sum + area / 2) / area);
                }
            }
        }

        return small;
    }

    bool Covers(int dx, int dy, int radius) => Kind switch
    {
        ShapeKind.Circle => dx * dx + dy * dy <= radius * radius,
        ShapeKind.Square => Math.Abs(dx) <= radius * 4 / 5 && Math.Abs(dy) <= radius * 4 / 5,
        // apex up: the half-width grows linearly from the top vertex to the base
        ShapeKind.Triangle => dy >= -radius && dy <= radius && Math.Abs(dx) * 2 <= (dy + radius),
        ShapeKind.Cross => (Math.Abs(dx) <= radius / 3 && Math.Abs(dy) <= radius) || (Math.Abs(dy) <= radius / 3 && Math.Abs(dx) <= radius),
        _ => false,
    };
}
