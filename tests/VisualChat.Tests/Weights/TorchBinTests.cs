using TorchSharp;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Tests.Weights;

/// <summary>
/// Reads .bin fixtures written by torch.save (PyTorch 1.13, pickle protocol 2) with
/// tests/VisualChat.Tests/Weights/Fixtures/make_fixtures.py; the expected values below are the ones that script saved.
/// </summary>
public class TorchBinTests
{
    private static T[] Values<T>(ITensorSource source, string name) where T : unmanaged
    {
        using var read = source.Read(name);
        return read.data<T>().ToArray();
    }

    private static short[] Bits16(ITensorSource source, string name)
    {
        using var read = source.Read(name);
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, short>(read.bytes).ToArray();
    }

    [Fact]
    public void ReadsDtypesViewsAndSharedStorages()
    {
        string path = WeightsTestFiles.Fixture("tensors.bin");
        using var source = TensorFiles.Open(path);
        Assert.Equal(["f32", "f16", "bf16", "i64", "transposed", "shared_a", "slice_b", "slice_c"], source.Entries.Select(e => e.Name));

        Assert.Equal(new long[] { 2, 3 }, source.Describe("f32").Shape);
        Assert.Equal(new[] { 1.5f, -2.25f, 3.0f, 0.125f, 1e-3f, -7.0f }, Values<float>(source, "f32"));

        Assert.Equal(ScalarType.Float16, source.Describe("f16").DType);
        Assert.Equal(new short[] { 14336, -17408, 31743, 1678 }, Bits16(source, "f16"));

        Assert.Equal(ScalarType.BFloat16, source.Describe("bf16").DType);
        Assert.Equal(new short[] { 16256, -16288, 18816, 15360 }, Bits16(source, "bf16"));

        Assert.Equal(ScalarType.Int64, source.Describe("i64").DType);
        Assert.Equal(new long[] { 1, -2, 3_000_000_000_000 }, Values<long>(source, "i64"));

        // base = arange(12).reshape(3, 4); transposed = base.t() shares its storage with stride (1, 4).
        Assert.Equal(new long[] { 4, 3 }, source.Describe("transposed").Shape);
        Assert.Equal(new float[] { 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11 }, Values<float>(source, "transposed"));
        Assert.Equal(Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), Values<float>(source, "shared_a"));

        // big = arange(10); slice_b = big[2:8:2] (offset 2, stride 2); slice_c = big[5:] (offset 5).
        Assert.Equal(new float[] { 2, 4, 6 }, Values<float>(source, "slice_b"));
        Assert.Equal(new float[] { 5, 6, 7, 8, 9 }, Values<float>(source, "slice_c"));
    }

    [Fact]
    public void ConvertsOnReadAndReadsEachTimeAFreshTensor()
    {
        using var source = TensorFiles.Open(WeightsTestFiles.Fixture("tensors.bin"));
        using var converted = source.Read("bf16", ScalarType.Float32);
        Assert.Equal(new float[] { 1.0f, -3.5f, 1048576f, 0.0078125f }, converted.data<float>().ToArray());
        using var first = source.Read("shared_a");
        using var second = source.Read("shared_a");
        first.add_(1);
        Assert.Equal(0f, second[0, 0].item<float>());
    }

    [Fact]
    public void UnwrapsAStateDictNestedUnderModule()
    {
        using var source = TensorFiles.Open(WeightsTestFiles.Fixture("nested.bin"));
        Assert.Equal(["w"], source.Entries.Select(e => e.Name));
        Assert.Equal(new float[] { 1, 2 }, Values<float>(source, "w"));
    }

    [Fact]
    public void ReadsParametersAndModuleStateDictsWithMetadata()
    {
        using (var parameters = TensorFiles.Open(WeightsTestFiles.Fixture("parameter.bin")))
        {
            Assert.Equal(new float[] { 3, 4 }, Values<float>(parameters, "p"));
        }

        using var source = TensorFiles.Open(WeightsTestFiles.Fixture("linear.bin"));
        using var linear = nn.Linear(3, 2);
        var report = StateDict.Load(linear, source);
        Assert.Equal(["weight", "bias"], report.Loaded);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5, 6 }, linear.weight!.data<float>().ToArray());
        Assert.Equal(new float[] { 0.5f, -0.5f }, linear.bias!.data<float>().ToArray());
    }

    [Fact]
    public void RefusesAPickleThatCallsOsSystem()
    {
        string path = WeightsTestFiles.Fixture("malicious.bin");
        var error = Assert.Throws<InvalidDataException>(() => TensorFiles.Open(path));
        Assert.Contains("refuses global 'os.system'", error.Message);
        Assert.Contains("convert the checkpoint to safetensors", error.Message);
        Assert.Contains(path, error.Message);
    }

    [Fact]
    public void OpensPytorchModelBinInAFolderAndNamesMissingTensors()
    {
        using var files = new WeightsTestFiles();
        File.Copy(WeightsTestFiles.Fixture("nested.bin"), files.PathOf("pytorch_model.bin"));
        using var source = TensorFiles.Open(files.Folder);
        var error = Assert.Throws<KeyNotFoundException>(() => source.Read("missing.weight"));
        Assert.Contains("'missing.weight'", error.Message);
        Assert.Contains("pytorch_model.bin", error.Message);
    }

    [Fact]
    public void TruncatedArchiveIsRefusedNamingTheFile()
    {
        using var files = new WeightsTestFiles();
        var bytes = File.ReadAllBytes(WeightsTestFiles.Fixture("tensors.bin"));
        string path = files.PathOf("cut.bin");
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var error = Assert.Throws<InvalidDataException>(() => TensorFiles.Open(path));
        Assert.Contains(path, error.Message);
    }

    [Fact]
    public void OpensAShardedBinCheckpointThroughItsIndex()
    {
        using var files = new WeightsTestFiles();
        File.Copy(WeightsTestFiles.Fixture("tensors.bin"), files.PathOf("pytorch_model-00001-of-00002.bin"));
        File.Copy(WeightsTestFiles.Fixture("nested.bin"), files.PathOf("pytorch_model-00002-of-00002.bin"));
        File.WriteAllText(files.PathOf("pytorch_model.bin.index.json"), """
            {"metadata": {"total_size": 56},
             "weight_map": {"f32": "pytorch_model-00001-of-00002.bin", "slice_b": "pytorch_model-00001-of-00002.bin",
                            "w": "pytorch_model-00002-of-00002.bin"}}
            """);
        using var source = TensorFiles.Open(files.Folder);
        Assert.Equal(["f32", "slice_b", "w"], source.Entries.Select(e => e.Name));
        Assert.Equal(new float[] { 2, 4, 6 }, Values<float>(source, "slice_b"));
        Assert.Equal(new float[] { 1, 2 }, Values<float>(source, "w"));
        Assert.EndsWith("pytorch_model-00002-of-00002.bin", source.Describe("w").File);
    }
}
