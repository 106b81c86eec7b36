using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using static TorchSharp.torch;

namespace VisualChat.Model.Presets;

/// <summary>A vision-encoder preset of <see cref="VisionPresets"/> in the common preset catalog.</summary>
public sealed class VisionEncoderPreset(string name) : IModelPreset
{
    public string Name { get; } = name;
    public ModelPresetKind Kind => ModelPresetKind.VisionEncoder;
    public string Summary => VisionPresets.Info(Name).Title;

    public PresetDescription Describe()
    {
        var info = VisionPresets.Info(Name);
        return new PresetDescription(Name, Kind, info.Title, info.Parameters,
            info.Tensors.Select(t => new PresetTensor(t.Name, t.Shape)).ToList(),
            [VisionPresets.Describe(Name)]);
    }

    public PresetWriteResult Write(string folder, PresetWriteOptions options)
    {
        var dtype = options.DType ?? ScalarType.Float32;
        var info = VisionPresets.Write(Name, folder, dtype, checked((int)options.Seed));
        var files = Directory.GetFiles(folder).Select(Path.GetFileName).OfType<string>().Order().ToList();
        return new PresetWriteResult(folder, files, info.Bytes(dtype), HasTokenizer: false);
    }
}
