using System.Text.Json;
using System.Text.Json.Serialization;

namespace VisualChat.Vision;

/// <summary>
/// A size entry of preprocessor_config.json: a bare int, {"shortest_edge": n} or {"height": h, "width": w}.
/// How a bare int is read depends on the field (transformers' get_size_dict): for "size" it is a shortest edge,
/// for "crop_size" a square.
/// </summary>
[JsonConverter(typeof(ImageSizeJsonConverter))]
public sealed record ImageSize(int? ShortestEdge = null, int? Height = null, int? Width = null, int? Scalar = null)
{
    public static ImageSize Square(int side) => new(Height: side, Width: side);
    public static ImageSize Shortest(int edge) => new(ShortestEdge: edge);
}

internal sealed class ImageSizeJsonConverter : JsonConverter<ImageSize>
{
    public override ImageSize Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Number)
            return new ImageSize(Scalar: reader.GetInt32());
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new JsonException("An image size must be an integer or an object with shortest_edge or height/width.");
        int? shortest = null, height = null, width = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            var name = reader.GetString();
            reader.Read();
            int? value = reader.TokenType == JsonTokenType.Null ? null : reader.GetInt32();
            switch (name)
            {
                case "shortest_edge": shortest = value; break;
                case "height": height = value; break;
                case "width": width = value; break;
                default: throw new JsonException($"Unsupported image size key '{name}'; expected shortest_edge or height/width.");
            }
        }
        return new ImageSize(shortest, height, width);
    }

    public override void Write(Utf8JsonWriter writer, ImageSize value, JsonSerializerOptions options)
    {
        if (value.Scalar is int scalar) { writer.WriteNumberValue(scalar); return; }
        writer.WriteStartObject();
        if (value.ShortestEdge is int s) writer.WriteNumber("shortest_edge", s);
        if (value.Height is int h) writer.WriteNumber("height", h);
        if (value.Width is int w) writer.WriteNumber("width", w);
        writer.WriteEndObject();
    }
}

/// <summary>HF <c>preprocessor_config.json</c> for <c>CLIPImageProcessor</c>; defaults are CLIPImageProcessor's.</summary>
public sealed class ImageProcessorConfig
{
    [JsonPropertyName("do_resize")] public bool DoResize { get; set; } = true;
    [JsonPropertyName("size")] public ImageSize Size { get; set; } = ImageSize.Shortest(224);
    /// <summary>PIL resampling filter id; only 3 (bicubic) is supported.</summary>
    [JsonPropertyName("resample")] public int Resample { get; set; } = 3;
    [JsonPropertyName("do_center_crop")] public bool DoCenterCrop { get; set; } = true;
    [JsonPropertyName("crop_size")] public ImageSize CropSize { get; set; } = ImageSize.Square(224);
    [JsonPropertyName("do_rescale")] public bool DoRescale { get; set; } = true;
    [JsonPropertyName("rescale_factor")] public double RescaleFactor { get; set; } = 1.0 / 255;
    [JsonPropertyName("do_normalize")] public bool DoNormalize { get; set; } = true;
    [JsonPropertyName("image_mean")] public float[] ImageMean { get; set; } = [.. OpenAiClipMean];
    [JsonPropertyName("image_std")] public float[] ImageStd { get; set; } = [.. OpenAiClipStd];
    [JsonPropertyName("do_convert_rgb")] public bool DoConvertRgb { get; set; } = true;

    public static readonly float[] OpenAiClipMean = [0.48145466f, 0.4578275f, 0.40821073f];
    public static readonly float[] OpenAiClipStd = [0.26862954f, 0.26130258f, 0.27577711f];

    /// <summary>openai/clip-vit-large-patch14: shortest edge 224, center crop 224.</summary>
    public static ImageProcessorConfig Clip224 => new();

    /// <summary>openai/clip-vit-large-patch14-336: shortest edge 336, center crop 336.</summary>
    public static ImageProcessorConfig Clip336 => new() { Size = ImageSize.Shortest(336), CropSize = ImageSize.Square(336) };

    /// <summary>
    /// DeepSpeed-VisualChat's Qwen-VL preprocessor_config.json ("size": 448, "crop_size": 448): loaded by CLIPImageProcessor
    /// this is shortest edge 448 then center crop 448x448.
    /// </summary>
    public static ImageProcessorConfig QwenVL448 => new() { Size = new ImageSize(Scalar: 448), CropSize = new ImageSize(Scalar: 448) };

    /// <summary>CLIP preprocessing to a square of <paramref name="imageSize"/>: Clip224, Clip336, QwenVL448 or the same recipe at another size.</summary>
    public static ImageProcessorConfig ForImageSize(int imageSize) => imageSize switch
    {
        224 => Clip224,
        336 => Clip336,
        448 => QwenVL448,
        _ => new ImageProcessorConfig { Size = ImageSize.Shortest(imageSize), CropSize = ImageSize.Square(imageSize) },
    };

    public static ImageProcessorConfig FromFile(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"Preprocessor config '{path}' does not exist.", path);
        ImageProcessorConfig? config;
        try
        {
            config = JsonSerializer.Deserialize<ImageProcessorConfig>(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Preprocessor config '{path}' is not a valid preprocessor_config.json: {e.Message}", e);
        }
        if (config is null)
            throw new InvalidDataException($"Preprocessor config '{path}' is empty (null).");
        config.Validate(path);
        return config;
    }

    /// <summary>Checks the settings this implementation supports; <paramref name="source"/> names the config in errors.</summary>
    public void Validate(string source = "ImageProcessorConfig")
    {
        if (DoResize && Resample != 3)
            throw new NotSupportedException($"{source}: resample={Resample} is not supported; only 3 (bicubic, as CLIP uses) is implemented.");
        if (DoResize && Size is null)
            throw new InvalidDataException($"{source}: do_resize is true but 'size' is missing.");
        if (DoCenterCrop && CropSize is null)
            throw new InvalidDataException($"{source}: do_center_crop is true but 'crop_size' is missing.");
        if (DoNormalize && (ImageMean?.Length != 3 || ImageStd?.Length != 3))
            throw new InvalidDataException($"{source}: image_mean and image_std need 3 values (one per RGB channel).");
        // A zero or non-finite std turns every pixel into Inf/NaN, which would train or chat on garbage without a word.
        if (DoNormalize && ImageStd!.Any(v => !(v > 0) || !float.IsFinite(v)))
            throw new InvalidDataException($"{source}: image_std = [{string.Join(", ", ImageStd!)}]; every value must be a finite number > 0 (pixels are divided by it).");
        if (DoNormalize && ImageMean!.Any(v => !float.IsFinite(v)))
            throw new InvalidDataException($"{source}: image_mean = [{string.Join(", ", ImageMean!)}]; every value must be finite.");
        if (DoResize && Size is { ShortestEdge: null, Scalar: null } && (Size.Height is null || Size.Width is null))
            throw new InvalidDataException($"{source}: 'size' needs shortest_edge, or both height and width.");
    }

    /// <summary>Resize target (height, width) for an input of the given size, as transformers' get_resize_output_image_size.</summary>
    public (int Height, int Width) ResizeOutputSize(int height, int width)
    {
        int? shortestEdge = Size.ShortestEdge ?? Size.Scalar;
        if (shortestEdge is int target)
        {
            // default_to_square=False: short side -> target, long side -> int(target * long / short) (truncation).
            bool widthIsShort = width <= height;
            int shortSide = widthIsShort ? width : height, longSide = widthIsShort ? height : width;
            int newLong = (int)((double)((long)target * longSide) / shortSide);
            return widthIsShort ? (newLong, target) : (target, newLong);
        }
        return (Size.Height!.Value, Size.Width!.Value);
    }

    /// <summary>Center-crop size (height, width); a bare int is a square.</summary>
    public (int Height, int Width) CropOutputSize()
    {
        if (CropSize.Scalar is int side) return (side, side);
        if (CropSize.Height is int h && CropSize.Width is int w) return (h, w);
        if (CropSize.ShortestEdge is int s) return (s, s);
        throw new InvalidDataException("crop_size needs height and width.");
    }

    /// <summary>Height and width of the processor output for an input of the given size.</summary>
    public (int Height, int Width) OutputSize(int height, int width)
    {
        if (DoResize) (height, width) = ResizeOutputSize(height, width);
        if (DoCenterCrop) (height, width) = CropOutputSize();
        return (height, width);
    }
}
