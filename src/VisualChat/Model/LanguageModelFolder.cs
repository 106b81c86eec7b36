using VisualChat.Text;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>A HF language-model folder: config.json, the weights and the tokenizer files side by side.</summary>
public static class LanguageModelFolder
{
    /// <summary>True when <paramref name="folder"/> holds tokenizer.model or tokenizer.json.</summary>
    public static bool HasTokenizer(string folder) =>
        File.Exists(Path.Combine(folder, TokenizerFactory.ModelFileName)) || File.Exists(Path.Combine(folder, TokenizerFactory.JsonFileName));

    /// <summary>
    /// Loads the model (<see cref="LlamaForCausalLM.FromPretrained"/>) and its tokenizer, and checks they agree: every
    /// tokenizer id must be a row of the embedding matrix.
    /// </summary>
    public static (LlamaForCausalLM Model, SentencePieceTokenizer Tokenizer) Load(string folder, Device? device = null, ScalarType? dtype = null)
    {
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Model folder '{folder}' does not exist.");
        VisualChat.Weights.ModelFolderWriter.VerifyOrThrow(folder);
        if (!HasTokenizer(folder))
        {
            throw new FileNotFoundException($"Model folder '{folder}' has no tokenizer ({TokenizerFactory.ModelFileName} or {TokenizerFactory.JsonFileName}); " +
                "copy the tokenizer files of the model into it (e.g. vchat init-model --tokenizer PATH).", Path.Combine(folder, TokenizerFactory.ModelFileName));
        }

        var tokenizer = TokenizerFactory.FromFolder(folder);
        var model = LlamaForCausalLM.FromPretrained(folder, device, dtype);
        if (tokenizer.VocabSize > model.Config.VocabSize) {
            model.Dispose();
            throw new InvalidDataException($"Model folder '{folder}': the tokenizer has {tokenizer.VocabSize} ids but config.json vocab_size is {model.Config.VocabSize}; " +
                "the tokenizer does not belong to this model (or the embeddings were not resized after adding tokens).");
        }
        return (model, tokenizer);
    }

    /// <summary>Saves the model (<see cref="LlamaForCausalLM.SavePretrained"/>) and the tokenizer into one folder,
    /// atomically and with a manifest of its files (<see cref="VisualChat.Weights.ModelFolderWriter"/>).</summary>
    public static void Save(string folder, LlamaForCausalLM model, SentencePieceTokenizer tokenizer, ScalarType? dtype = null,
        long maxShardBytes = LlamaForCausalLM.DefaultMaxShardBytes) =>
        VisualChat.Weights.ModelFolderWriter.Write(folder, temporary =>
        {
            model.SavePretrained(temporary, dtype, maxShardBytes);
            tokenizer.Save(temporary);
        });
}
