using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Tests.Weights;

public class StateDictTests
{
    /// <summary>A small module with a nested child, a parameter and a persistent buffer, named like HF keys.</summary>
    private sealed class TinyBlock : nn.Module<Tensor, Tensor>
    {
        private readonly Linear q_proj;
        private readonly LayerNorm norm;
        private readonly Tensor position_ids;

        public TinyBlock(long width = 4) : base(nameof(TinyBlock))
        {
            q_proj = nn.Linear(width, width);
            norm = nn.LayerNorm(width);
            position_ids = arange(width, ScalarType.Int64);
            RegisterComponents();
        }

        public override Tensor forward(Tensor input) => norm.forward(q_proj.forward(input));
    }

    private static Dictionary<string, float[]> Snapshot(nn.Module module) =>
        module.state_dict().ToDictionary(p => p.Key, p => p.Value.to(ScalarType.Float32).data<float>().ToArray());

    [Fact]
    public void SaveThenStrictLoadRestoresEveryTensor()
    {
        using var files = new WeightsTestFiles();
        using var original = new TinyBlock();
        using (no_grad())
        {
            original.state_dict()["norm.weight"].uniform_(0, 1);
        }
        StateDict.Save(original, files.Folder);
        Assert.True(File.Exists(files.PathOf("model.safetensors")));

        using var restored = new TinyBlock();
        using var source = TensorFiles.Open(files.Folder);
        Assert.Equal("pt", ((SafetensorsFile)source).Metadata["format"]);
        var report = StateDict.Load(restored, source);
        Assert.Equal(5, report.Loaded.Count);
        Assert.Contains("position_ids", report.Loaded);
        Assert.Empty(report.Missing);
        Assert.Empty(report.Unexpected);
        Assert.Equal(Snapshot(original), Snapshot(restored));
    }

    [Fact]
    public void SavesShardedInBFloat16AndLoadsIntoFloat32Parameters()
    {
        using var files = new WeightsTestFiles();
        using var original = new TinyBlock(8);
        StateDict.Save(original, files.Folder, ScalarType.BFloat16, maxShardBytes: 100);
        Assert.True(File.Exists(files.PathOf("model.safetensors.index.json")));

        using var source = TensorFiles.Open(files.Folder);
        Assert.Equal(ScalarType.BFloat16, source.Describe("q_proj.weight").DType);
        Assert.Equal(ScalarType.Int64, source.Describe("position_ids").DType);
        using var restored = new TinyBlock(8);
        StateDict.Load(restored, source);
        var expected = original.state_dict()["q_proj.weight"].to(ScalarType.BFloat16).to(ScalarType.Float32).data<float>().ToArray();
        Assert.Equal(ScalarType.Float32, restored.state_dict()["q_proj.weight"].dtype);
        Assert.Equal(expected, restored.state_dict()["q_proj.weight"].data<float>().ToArray());
    }

    private static string SaveTensors(WeightsTestFiles files, params (string Name, long[] Shape)[] tensors)
    {
        string path = files.PathOf("ckpt.safetensors");
        var values = tensors.Select(t => new KeyValuePair<string, Tensor>(t.Name, ones(t.Shape))).ToList();
        TensorFiles.SaveSafetensors(path, values);
        values.ForEach(v => v.Value.Dispose());
        return path;
    }

    private static readonly (string, long[])[] TinyBlockTensors =
    [
        ("q_proj.weight", [4, 4]), ("q_proj.bias", [4]), ("norm.weight", [4]), ("norm.bias", [4]), ("position_ids", [4]),
    ];

    [Fact]
    public void StrictLoadNamesMissingTensorsAndLeavesTheModuleUntouched()
    {
        using var files = new WeightsTestFiles();
        string path = SaveTensors(files, TinyBlockTensors.Where(t => t.Item1 != "norm.bias").ToArray());
        using var module = new TinyBlock();
        var before = Snapshot(module);
        using var source = TensorFiles.Open(path);
        var error = Assert.Throws<InvalidDataException>(() => StateDict.Load(module, source));
        Assert.Contains("missing from the checkpoint (1): norm.bias", error.Message);
        Assert.Contains(path, error.Message);
        Assert.Equal(before, Snapshot(module));
    }

    [Fact]
    public void StrictLoadNamesUnexpectedTensorsUnlessIgnored()
    {
        using var files = new WeightsTestFiles();
        string path = SaveTensors(files, [.. TinyBlockTensors, ("rotary_emb.inv_freq", [2])]);
        using var module = new TinyBlock();
        using var source = TensorFiles.Open(path);
        var error = Assert.Throws<InvalidDataException>(() => StateDict.Load(module, source));
        Assert.Contains("unexpected in the checkpoint (1): rotary_emb.inv_freq", error.Message);

        var report = StateDict.Load(module, source, new LoadOptions { IgnoreUnexpected = new HashSet<string> { "rotary_emb.inv_freq" } });
        Assert.Empty(report.Unexpected);
        Assert.Equal(1f, module.state_dict()["q_proj.weight"][2, 3].item<float>());
    }

    [Fact]
    public void ShapeMismatchNamesTensorFileAndBothShapes()
    {
        using var files = new WeightsTestFiles();
        string path = SaveTensors(files, [.. TinyBlockTensors.Where(t => t.Item1 != "q_proj.weight"), ("q_proj.weight", [4, 3])]);
        using var module = new TinyBlock();
        using var source = TensorFiles.Open(path);
        var error = Assert.Throws<InvalidDataException>(() => StateDict.Load(module, source));
        Assert.Contains($"'q_proj.weight' in '{path}'", error.Message);
        Assert.Contains("expects [4, 4], the checkpoint has [4, 3]", error.Message);
        Assert.Throws<InvalidDataException>(() => StateDict.Load(module, source, new LoadOptions { Strict = false }));
    }

    [Fact]
    public void NonStrictLoadReportsMissingAndUnexpected()
    {
        using var files = new WeightsTestFiles();
        string path = SaveTensors(files, ("q_proj.weight", [4, 4]), ("q_proj.bias", [4]), ("lm_head.weight", [2, 4]));
        using var module = new TinyBlock();
        using var source = TensorFiles.Open(path);
        var report = StateDict.Load(module, source, new LoadOptions { Strict = false });
        Assert.Equal(["q_proj.weight", "q_proj.bias"], report.Loaded);
        Assert.Equal(["norm.weight", "norm.bias", "position_ids"], report.Missing);
        Assert.Equal(["lm_head.weight"], report.Unexpected);
        Assert.Equal(1f, module.state_dict()["q_proj.bias"][0].item<float>());
    }

    [Fact]
    public void MapNameTranslatesPrefixesAndNullSkips()
    {
        using var files = new WeightsTestFiles();
        string path = SaveTensors(files, TinyBlockTensors.Where(t => t.Item1 != "position_ids").Select(t => ("model.layers.0." + t.Item1, t.Item2)).ToArray());
        using var module = new TinyBlock();
        using var source = TensorFiles.Open(path);
        var report = StateDict.Load(module, source, new LoadOptions
        {
            MapName = name => name == "position_ids" ? null : "model.layers.0." + name,
        });
        Assert.Equal(4, report.Loaded.Count);
        Assert.Empty(report.Missing);
        Assert.Equal(1f, module.state_dict()["norm.bias"][1].item<float>());
    }

    /// <summary>Records that every tensor a load reads is disposed before the next is read.</summary>
    private sealed class OneAtATimeSource(ITensorSource inner) : ITensorSource
    {
        private Tensor? _previous;
        public int Reads { get; private set; }
        public int ReadsWhilePreviousAlive { get; private set; }
        public IReadOnlyList<TensorEntry> Entries => inner.Entries;
        public bool Contains(string name) => inner.Contains(name);
        public TensorEntry Describe(string name) => inner.Describe(name);

        public Tensor Read(string name, ScalarType? dtype = null, Device? device = null)
        {
            if (_previous is { IsInvalid: false })
            {
                ReadsWhilePreviousAlive++;
            }
            Reads++;
            _previous = inner.Read(name, dtype, device);
            return _previous;
        }

        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public void LoadStreamsOneTensorAtATimeIntoTheExistingParameters()
    {
        // Design check for streaming: parameters are filled in place (the tensors taken before the load hold the loaded values) and every
        // temporary is disposed before the next tensor is read, so at most one tensor-sized buffer exists besides the model.
        using var files = new WeightsTestFiles();
        using var original = new TinyBlock(16);
        StateDict.Save(original, files.PathOf("m.safetensors"));
        using var module = new TinyBlock(16);
        var tensorsBefore = module.state_dict();
        using var source = new OneAtATimeSource(TensorFiles.Open(files.PathOf("m.safetensors")));
        StateDict.Load(module, source);
        Assert.Equal(5, source.Reads);
        Assert.Equal(0, source.ReadsWhilePreviousAlive);
        var filledInPlace = tensorsBefore.ToDictionary(p => p.Key, p => p.Value.to(ScalarType.Float32).data<float>().ToArray());
        Assert.Equal(Snapshot(original), filledInPlace);
        Assert.Equal(Snapshot(original), Snapshot(module));
    }
}
