using TorchSharp;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>What <see cref="LlamaQuantizer.Quantize(string, string, Action{string}, int)"/> wrote.</summary>
public sealed record QuantizeReport(int QuantizedMatrices, long SourceWeightBytes, long OutputWeightBytes);

/// <summary>
/// Writes a q8 (or q4) copy of a LLaMA folder: every decoder projection and the output head become int8 (or 4-bit)
/// blocks with fp32 scales (<see cref="QuantizedLinear"/>), embeddings and norms stay as they are, and the tokenizer files come along. Tensors
/// are read one at a time and quantized straight into the new model, so a 7B model never exists in fp32 in memory
/// (peak ≈ the q8 model + one fp32 matrix). The folder is written atomically.
/// </summary>
public static class LlamaQuantizer
{
    static readonly string[] CarriedFiles = ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "generation_config.json"];

    public static QuantizeReport Quantize(string sourceFolder, string outputFolder, Action<string>? progress = null, int bits = 8)
    {
        var configPath = Path.Combine(sourceFolder, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{configPath} does not exist; --model must be a LLaMA folder (config.json + weights).", configPath);
        var config = LlamaConfig.Load(configPath);
        using var source = TensorFiles.Open(sourceFolder);
        using var model = Build(config, name => {
            if (!source.Contains(name)) throw new InvalidDataException($"{sourceFolder}: the weights have no tensor '{name}', which config.json's architecture needs.");
            return source.Read(name, ScalarType.Float32);
        }, progress, configPath, bits);
        long sourceBytes = source.Entries.Sum(e => DTypes.NumberOfElements(e.Shape) * DTypes.ElementSize(e.DType));
        long outputBytes = model.state_dict().Sum(p => p.Value.numel() * p.Value.ElementSize);
        ModelFolderWriter.Write(outputFolder, folder => {
            model.Config.Save(Path.Combine(folder, "config.json"));
            StateDict.Save(model, folder, maxShardBytes: LlamaForCausalLM.DefaultMaxShardBytes);
            foreach (var file in CarriedFiles) {
                var from = Path.Combine(sourceFolder, file);
                if (File.Exists(from)) File.Copy(from, Path.Combine(folder, file));
            }
        });
        return new QuantizeReport(model.named_modules().Count(m => m.module is QuantizedLinear), sourceBytes, outputBytes);
    }

    /// <summary>A q8 (or, with <paramref name="bits"/> 4, q4) copy of a model in memory (the source is left as it is).</summary>
    public static LlamaForCausalLM Quantize(LlamaForCausalLM source, int bits = 8)
    {
        var weights = source.state_dict();
        return Build(source.Config, name => weights.TryGetValue(name, out var t) ? t.to(ScalarType.Float32, copy: true)
            : throw new InvalidDataException($"The model has no tensor '{name}'."), null, "the model", bits);
    }

    /// <summary>The quantized model of <paramref name="config"/>, each tensor read (fp32, owned by the caller's read) once.</summary>
    static LlamaForCausalLM Build(LlamaConfig config, Func<string, Tensor> read, Action<string>? progress, string origin, int bits)
    {
        if (config.Quantization is not null) throw new InvalidDataException($"{origin} is already quantized ({config.Quantization.QuantMethod}); quantize the float model it came from.");
        var quantizedConfig = config.Clone();
        quantizedConfig.Quantization = QuantizationConfig.For(bits);
        // The head gets its own quantized matrix; the (float) embedding stays for the row lookups.
        quantizedConfig.TieWordEmbeddings = false;
        quantizedConfig.TorchDtype = "float32";
        quantizedConfig.Dtype = null;
        quantizedConfig.Validate();
        var model = new LlamaForCausalLM(quantizedConfig, seed: null, initialize: false);
        try {
            var quantized = model.named_modules().Where(m => m.module is QuantizedLinear).ToDictionary(m => m.name, m => (QuantizedLinear)m.module);
            int done = 0;
            using (no_grad()) {
                foreach (var (name, layer) in quantized) {
                    string weightName = name == "lm_head" && config.TieWordEmbeddings ? "model.embed_tokens.weight" : name + ".weight";
                    using var weight = read(weightName);
                    using var bias = layer.bias is null ? null : read(name + ".bias");
                    layer.Quantize(weight, bias);
                    if (++done % 16 == 0) progress?.Invoke($"quantized {done}/{quantized.Count} matrices");
                }
                foreach (var (name, target) in model.state_dict()) {
                    if (quantized.Keys.Any(q => name.StartsWith(q + ".", StringComparison.Ordinal))) continue;
                    using var value = read(name);
                    if (!value.shape.SequenceEqual(target.shape))
                        throw new InvalidDataException($"{origin}: '{name}' is [{string.Join(", ", value.shape)}] but config.json implies [{string.Join(", ", target.shape)}].");
                    target.copy_(value);
                }
            }
            model.eval();
            return model;
        } catch {
            model.Dispose();
            throw;
        }
    }
}
