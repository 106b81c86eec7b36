using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Tests.Weights;

public class SafetensorsTests
{
    private static byte[] Bytes(Tensor tensor) => tensor.contiguous().bytes.ToArray();

    private static byte[] Concat(params byte[][] parts) => parts.SelectMany(p => p).ToArray();

    [Fact]
    public void WritesTheReferenceImplementationsBytesForI32()
    {
        // Expected bytes from the safetensors project's own torch serialization test.
        using var files = new WeightsTestFiles();
        using var data = zeros(new long[] { 2, 2 }, ScalarType.Int32);
        data[1, 1] = tensor(1, ScalarType.Int32);
        string path = files.PathOf("i32.safetensors");
        TensorFiles.SaveSafetensors(path, [new("test", data)]);

        var expected = Concat(
            [(byte)'@', 0, 0, 0, 0, 0, 0, 0],
            Encoding.ASCII.GetBytes("{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}    "),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        Assert.Equal(expected, File.ReadAllBytes(path));
    }

    [Fact]
    public void WritesTheReferenceImplementationsBytesForBF16()
    {
        using var files = new WeightsTestFiles();
        using var data = ones(new long[] { 2, 2 }, ScalarType.BFloat16);
        data[0, 0] = tensor(2.25f).to(ScalarType.BFloat16);
        string path = files.PathOf("bf16.safetensors");
        TensorFiles.SaveSafetensors(path, [new("test", data)]);

        var expected = Concat(
            [(byte)'@', 0, 0, 0, 0, 0, 0, 0],
            Encoding.ASCII.GetBytes("{\"test\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}    "),
            [0x10, 0x40, 0x80, 0x3f, 0x80, 0x3f, 0x80, 0x3f]); // 2.25, 1, 1, 1 as bfloat16
        Assert.Equal(expected, File.ReadAllBytes(path));
    }

    [Fact]
    public void OrdersTensorsByDtypeThenNameWithMetadataFirstAndSpacePadding()
    {
        using var files = new WeightsTestFiles();
        using var z = tensor(new float[] { 1f, -2f });
        using var a = tensor(new float[] { 0.5f, -1f }).to(ScalarType.Float16);
        string path = files.PathOf("two.safetensors");
        TensorFiles.SaveSafetensors(path, [new("a", a), new("z", z)], new Dictionary<string, string> { ["format"] = "pt" });

        const string json = "{\"__metadata__\":{\"format\":\"pt\"},\"z\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]}}";
        Assert.Equal(139, json.Length);
        var expected = Concat(
            [144, 0, 0, 0, 0, 0, 0, 0],
            Encoding.ASCII.GetBytes(json + "     "),
            [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0], // 1f, -2f
            [0x00, 0x38, 0x00, 0xbc]);                       // 0.5 and -1 as float16
        Assert.Equal(expected, File.ReadAllBytes(path));

        using var source = (SafetensorsFile)TensorFiles.Open(path);
        Assert.Equal("pt", source.Metadata["format"]);
        Assert.Equal(["z", "a"], source.Entries.Select(e => e.Name));
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    public void SingleFileRoundTripIsBitExact(ScalarType dtype)
    {
        using var files = new WeightsTestFiles();
        using var generator = new Generator(7);
        using var first = randn(new long[] { 3, 5 }, generator: generator).to(dtype);
        using var second = randn(new long[] { 7 }, generator: generator).to(dtype);
        using var scalar = tensor(3.25f).to(dtype);
        using var empty = zeros(new long[] { 2, 0 }, dtype);
        string path = files.PathOf("round.safetensors");
        TensorFiles.SaveSafetensors(path, [new("layer.0.weight", first), new("layer.0.bias", second), new("scale", scalar), new("empty", empty)]);

        using var source = TensorFiles.Open(path);
        Assert.Equal(4, source.Entries.Count);
        var entry = source.Describe("layer.0.weight");
        Assert.Equal(dtype, entry.DType);
        Assert.Equal(new long[] { 3, 5 }, entry.Shape);
        Assert.Equal(path, entry.File);
        foreach (var (name, original) in new[] { ("layer.0.weight", first), ("layer.0.bias", second), ("scale", scalar), ("empty", empty) })
        {
            using var read = source.Read(name);
            Assert.Equal(dtype, read.dtype);
            Assert.Equal(original.shape, read.shape);
            Assert.Equal(Bytes(original), Bytes(read));
        }
    }

    [Fact]
    public void ReadConvertsDtypeOnRequest()
    {
        using var files = new WeightsTestFiles();
        using var half = tensor(new float[] { 0.5f, -1.25f, 3f }).to(ScalarType.BFloat16);
        string path = files.PathOf("convert.safetensors");
        TensorFiles.SaveSafetensors(path, [new("w", half)]);
        using var source = TensorFiles.Open(path);
        using var read = source.Read("w", ScalarType.Float32, CPU);
        Assert.Equal(ScalarType.Float32, read.dtype);
        Assert.Equal(new float[] { 0.5f, -1.25f, 3f }, read.data<float>().ToArray());
    }

    [Fact]
    public void NonContiguousInputsAreWrittenInLogicalOrder()
    {
        using var files = new WeightsTestFiles();
        using var matrix = arange(6, ScalarType.Float32).reshape(2, 3);
        using var transposed = matrix.t();
        string path = files.PathOf("t.safetensors");
        TensorFiles.SaveSafetensors(path, [new("t", transposed)]);
        using var source = TensorFiles.Open(path);
        using var read = source.Read("t");
        Assert.Equal(new float[] { 0, 3, 1, 4, 2, 5 }, read.data<float>().ToArray());
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    public void ShardedRoundTripWritesHfIndexAndIsBitExact(ScalarType dtype)
    {
        using var files = new WeightsTestFiles();
        using var generator = new Generator(11);
        var tensors = Enumerable.Range(0, 5)
            .Select(i => new KeyValuePair<string, Tensor>($"layers.{i}.weight", randn(new long[] { 4, 8 }, generator: generator).to(dtype)))
            .ToList();
        long tensorBytes = 32L * tensors[0].Value.ElementSize;
        TensorFiles.SaveSharded(files.Folder, tensors, maxShardBytes: 2 * tensorBytes);

        for (int shard = 1; shard <= 3; shard++)
        {
            Assert.True(File.Exists(files.PathOf($"model-{shard:D5}-of-00003.safetensors")));
        }
        Assert.False(File.Exists(files.PathOf("model.safetensors")));
        using (var index = JsonDocument.Parse(File.ReadAllText(files.PathOf("model.safetensors.index.json"))))
        {
            Assert.Equal(5 * tensorBytes, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
            var weightMap = index.RootElement.GetProperty("weight_map");
            Assert.Equal("model-00001-of-00003.safetensors", weightMap.GetProperty("layers.1.weight").GetString());
            Assert.Equal("model-00002-of-00003.safetensors", weightMap.GetProperty("layers.2.weight").GetString());
            Assert.Equal("model-00003-of-00003.safetensors", weightMap.GetProperty("layers.4.weight").GetString());
        }

        using var source = TensorFiles.Open(files.Folder);
        Assert.Equal(5, source.Entries.Count);
        Assert.EndsWith("model-00002-of-00003.safetensors", source.Describe("layers.3.weight").File);
        foreach (var (name, original) in tensors)
        {
            using var read = source.Read(name);
            Assert.Equal(Bytes(original), Bytes(read));
            original.Dispose();
        }
        var missing = Assert.Throws<KeyNotFoundException>(() => source.Describe("nope"));
        Assert.Contains("'nope'", missing.Message);
        Assert.Contains("model.safetensors.index.json", missing.Message);
    }

    [Fact]
    public void SmallDataGoesToOneModelFile()
    {
        using var files = new WeightsTestFiles();
        using var w = ones(3);
        TensorFiles.SaveSharded(files.Folder, [new("w", w)], maxShardBytes: 1 << 20, baseName: "adapter");
        Assert.Equal(["adapter.safetensors"], Directory.GetFiles(files.Folder).Select(Path.GetFileName));
        using var source = TensorFiles.Open(files.Folder);
        Assert.True(source.Contains("w"));
    }

    [Fact]
    public void MissingShardIsNamed()
    {
        using var files = new WeightsTestFiles();
        var tensors = new[] { ones(4), zeros(4) };
        TensorFiles.SaveSharded(files.Folder, [new("a", tensors[0]), new("b", tensors[1])], maxShardBytes: 16);
        foreach (var t in tensors)
        {
            t.Dispose();
        }
        File.Delete(files.PathOf("model-00002-of-00002.safetensors"));
        var error = Assert.Throws<FileNotFoundException>(() => TensorFiles.Open(files.Folder));
        Assert.Contains("model-00002-of-00002.safetensors", error.Message);
        Assert.Contains("model.safetensors.index.json", error.Message);
    }

    private static string WriteRaw(WeightsTestFiles files, string name, string json, int dataBytes, long? declaredLength = null)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)(declaredLength ?? header.Length));
        header.CopyTo(bytes, 8);
        string path = files.PathOf(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Theory]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12, "truncated", "'w'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,16]}}", 16, "needs 32 bytes", "'w'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16, "invalid data_offsets", "'w'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 16, "overlap", "'v'")]
    [InlineData("{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unsupported dtype 'Q4'", "'w'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "invalid shape", "'w'")]
    [InlineData("{\"w\": [1, 2", 8, "not valid JSON", "")]
    [InlineData("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "lacks a string dtype", "'w'")]
    public void CorruptFilesAreRefusedNamingFileAndTensor(string json, int dataBytes, string problem, string tensorName)
    {
        using var files = new WeightsTestFiles();
        string path = WriteRaw(files, "bad.safetensors", json, dataBytes);
        var error = Assert.Throws<InvalidDataException>(() => TensorFiles.Open(path));
        Assert.Contains(path, error.Message);
        Assert.Contains(problem, error.Message);
        Assert.Contains(tensorName, error.Message);
    }

    [Fact]
    public void HeaderLengthBeyondTheFileIsRefused()
    {
        using var files = new WeightsTestFiles();
        string path = WriteRaw(files, "len.safetensors", "{}", 0, declaredLength: 1L << 40);
        var error = Assert.Throws<InvalidDataException>(() => TensorFiles.Open(path));
        Assert.Contains(path, error.Message);
        Assert.Contains("header length", error.Message);

        File.WriteAllBytes(path, [1, 2, 3]);
        error = Assert.Throws<InvalidDataException>(() => TensorFiles.Open(path));
        Assert.Contains("too short", error.Message);
    }

    [Fact]
    public void FileCutAfterOpeningFailsTheReadNamingTensorAndFile()
    {
        using var files = new WeightsTestFiles();
        using var w = ones(1024);
        string path = files.PathOf("cut.safetensors");
        TensorFiles.SaveSafetensors(path, [new("w", w)]);
        using var source = TensorFiles.Open(path);
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite))
        {
            stream.SetLength(stream.Length - 100);
        }
        var error = Assert.Throws<InvalidDataException>(() => source.Read("w"));
        Assert.Contains(path, error.Message);
        Assert.Contains("'w'", error.Message);
    }

    [Fact]
    public void FolderResolutionFindsASingleSafetensorsAndRefusesAmbiguity()
    {
        using var files = new WeightsTestFiles();
        using var w = ones(2);
        TensorFiles.SaveSafetensors(files.PathOf("vision.safetensors"), [new("w", w)]);
        using (var source = TensorFiles.Open(files.Folder))
        {
            Assert.EndsWith("vision.safetensors", source.Describe("w").File);
        }
        TensorFiles.SaveSafetensors(files.PathOf("other.safetensors"), [new("w", w)]);
        var error = Assert.Throws<FileNotFoundException>(() => TensorFiles.Open(files.Folder));
        Assert.Contains(files.Folder, error.Message);
        Assert.Throws<FileNotFoundException>(() => TensorFiles.Open(files.PathOf("absent.safetensors")));
    }
}
