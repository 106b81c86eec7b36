using System.Globalization;
using TorchSharp;
using VisualChat.Model;
using VisualChat.Tests.Model;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Tests.Weights;

/// <summary>Loading with a memory mapping: the same model as a copying load, with the tensors that keep their stored
/// dtype living inside the file's mapping (checked against /proc/self/maps) and the others copied.</summary>
public class MemoryMappedLoadTests
{
    /// <summary>Whether <paramref name="address"/> lies in a mapping of <paramref name="file"/> in this process.</summary>
    static bool InMappingOf(string file, ulong address)
    {
        var full = Path.GetFullPath(file);
        foreach (var line in File.ReadLines("/proc/self/maps")) {
            if (!line.EndsWith(full, StringComparison.Ordinal)) continue;
            var range = line[..line.IndexOf(' ')].Split('-');
            ulong start = ulong.Parse(range[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            ulong end = ulong.Parse(range[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (address >= start && address < end) return true;
        }
        return false;
    }

    static unsafe ulong Address(Tensor t) => (ulong)TensorMemory.Pointer(t);

    [Fact]
    public void MappedLoadEqualsCopiedLoadAndLivesInTheFile()
    {
        using var folder = new TempFolder();
        var config = LlamaTestModels.Tiny();
        config.MaxPositionEmbeddings = 64;
        using (var source = new LlamaForCausalLM(config, seed: 4)) source.SavePretrained(folder.Path, ScalarType.Float32);
        var file = Path.Combine(folder.Path, "model.safetensors");

        using var mapped = LlamaForCausalLM.FromPretrained(folder.Path);
        using var copied = LlamaForCausalLM.FromPretrained(folder.Path, memoryMap: false);
        var expected = copied.state_dict();
        foreach (var (name, tensor) in mapped.state_dict()) {
            Assert.True(tensor.equal(expected[name]).all().item<bool>(), $"{name} differs");
            Assert.True(InMappingOf(file, Address(tensor)), $"{name} is not inside the mapping of {file}");
            Assert.False(InMappingOf(file, Address(expected[name])), $"{name} of the copying load points into the file");
        }

        // The mapped model decodes like the copied one (greedy, fused steps over the mapped weights).
        var options = new VisualChat.Inference.Generation.GenerationOptions { MaxNewTokens = 6, StopTokenIds = [] };
        Assert.Equal(VisualChat.Inference.Generation.TextGenerator.Generate(copied, [1, 5, 9], options).TokenIds,
            VisualChat.Inference.Generation.TextGenerator.Generate(mapped, [1, 5, 9], options).TokenIds);

        // A write lands in this process's private copy of the page, never in the file.
        using (no_grad()) mapped.model.norm.weight.fill_(7f);
        using var reread = LlamaForCausalLM.FromPretrained(folder.Path, memoryMap: false);
        Assert.True(reread.model.norm.weight.equal(copied.model.norm.weight).all().item<bool>());
    }

    [Fact]
    public void TensorsStoredInAnotherDTypeAreCopied()
    {
        using var folder = new TempFolder();
        var config = LlamaTestModels.Tiny();
        using (var source = new LlamaForCausalLM(config, seed: 4)) source.SavePretrained(folder.Path, ScalarType.BFloat16);
        using var model = LlamaForCausalLM.FromPretrained(folder.Path);   // fp32 compute from bf16 storage
        var weight = model.model.layers[0].self_attn.q_proj.Weight();
        Assert.Equal(ScalarType.Float32, weight.dtype);
        Assert.False(InMappingOf(Path.Combine(folder.Path, "model.safetensors"), Address(weight)));
    }
}
