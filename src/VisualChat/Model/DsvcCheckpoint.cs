using TorchSharp;
using VisualChat.Conversations;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Projection;
using VisualChat.Weights;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>What <see cref="DsvcCheckpoint.Load"/> needs besides the checkpoint folder.</summary>
public sealed record DsvcImportOptions
{
    /// <summary>The LLaMA folder the model was trained on (<c>--lm_model_name_or_path</c>): its config.json, and its
    /// tokenizer.model and weights where the checkpoint lacks them. Null: the path train_args.pt names, if it exists here.</summary>
    public string? LanguageModelFolder { get; init; }

    /// <summary>The CLIP or Qwen-VL (DSVC's <c>qwen_clip</c>) folder it was trained with (<c>--vision_model_name_or_path</c>):
    /// its config.json and preprocessor_config.json, and its weights where the checkpoint lacks them. Null: as above.</summary>
    public string? VisionFolder { get; init; }

    /// <summary>Overrides train_args.pt's <c>enable_mmca_attention</c>; required when that file is absent.</summary>
    public AttentionMode? AttentionMode { get; init; }
}

/// <summary>
/// DeepSpeed-VisualChat's own checkpoints (microsoft/DeepSpeedExamples, applications/DeepSpeed-VisualChat): the folder
/// its training writes per epoch, <c>pytorch_model.bin</c> holding the <c>DeepSpeedViLModel</c> state dict —
/// <c>vis_encoder.*</c> (CLIPVisionModel or the Qwen-VL tower), <c>lang_decoder.*</c> (LlamaForCausalLM, vocabulary resized
/// to the tokenizer), <c>lang_embed.weight</c> (the trained token embeddings, a copy of the LM's), <c>projection.*</c>
/// (<c>--vis_proj</c> baseline, vit or perceiver) — beside <c>train_args.pt</c> and the tokenizer files.
/// </summary>
/// <remarks>
/// <para>DSVC adds "### Image:", "&lt;image&gt;" and "&lt;PAD&gt;" after the LLaMA vocabulary. Its data pipeline replaces
/// "### Image:" by the text "### Image k:" and pads with &lt;/s&gt;, so only the "&lt;image&gt;" row is ever embedded; the
/// import keeps the LLaMA vocabulary plus "&lt;image&gt;" as id vocab_size (VisualChat's layout), and the LM head keeps the
/// vocabulary's rows (the added rows of DSVC's resized head were never trained).</para>
/// <para>Frozen parts missing from the checkpoint (ZeRO-3 saves only parameters; some users strip the frozen weights)
/// are read from the named folders. LoRA factors are ignored: DSVC fuses them into the weights before saving.
/// A tied LM becomes untied here, because DSVC's head is the frozen LM embedding, not the trained <c>lang_embed</c>.</para>
/// </remarks>
public static class DsvcCheckpoint
{
    public const string WeightsFile = "pytorch_model.bin", TrainArgsFile = "train_args.pt";
    const string VisionPrefix = "vis_encoder.", DecoderPrefix = "lang_decoder.", EmbedKey = "lang_embed.weight", ProjectionPrefix = "projection.";
    const string DecoderEmbedKey = "lang_decoder.model.embed_tokens.weight", DecoderHeadKey = "lang_decoder.lm_head.weight";
    const string ClipProbe = VisionPrefix + "vision_model.embeddings.patch_embedding.weight", QwenProbe = VisionPrefix + "conv1.weight";
    const string LmProbe = DecoderPrefix + "model.layers.0.";

    /// <summary>Reads a DSVC checkpoint (its folder or its pytorch_model.bin) as a <see cref="VisualChatModel"/> with the
    /// "dsvc" template. Tensors stream one at a time from the .bin into the model. <paramref name="log"/> hears where each
    /// part came from.</summary>
    public static VisualChatModel Load(string path, DsvcImportOptions? options = null, Action<string>? log = null)
    {
        options ??= new DsvcImportOptions();
        log ??= _ => { };
        string folder = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!;
        string weightsPath = Directory.Exists(path) ? Path.Combine(path, WeightsFile) : path;
        if (!File.Exists(weightsPath))
            throw new FileNotFoundException($"{weightsPath} is missing; a DeepSpeed-VisualChat checkpoint is the epoch folder its training writes, with {WeightsFile}.", weightsPath);

        var args = ReadTrainArgs(folder, log);
        using var source = TensorFiles.Open(weightsPath);
        string where = weightsPath;
        CheckPrefixes(source, where);
        if (!source.Contains(EmbedKey))
            throw new InvalidDataException($"{where}: '{EmbedKey}' is missing; DeepSpeedViLModel keeps its trained token embeddings there (is this a DeepSpeed-VisualChat checkpoint?).");

        var projection = DetectProjection(source, where);
        if (args.TryGetValue("vis_proj", out var trainedProjection) && trainedProjection is string named && named != ProjectionFactory.KindName(projection))
            throw new InvalidDataException($"{folder}: {TrainArgsFile} says vis_proj '{named}' but {WeightsFile} holds a '{ProjectionFactory.KindName(projection)}' projection; the two files are from different runs.");
        var attention = options.AttentionMode
            ?? (args.TryGetValue("enable_mmca_attention", out var mmca) && mmca is bool enabled ? enabled ? AttentionMode.Mmca : AttentionMode.Causal
            : throw new InvalidDataException($"{folder}: no {TrainArgsFile} says whether the model was trained with --enable_mmca_attention; pass --attention mmca or --attention causal."));

        string lmFolder = ResolveFolder(options.LanguageModelFolder, args, "lm_model_name_or_path", "--lm", "the LLaMA folder it was trained on", folder);
        string visionFolder = ResolveFolder(options.VisionFolder, args, "vision_model_name_or_path", "--vision", "the CLIP or qwen_clip folder it was trained with", folder);

        var lmConfig = LlamaConfig.Load(RequireFile(Path.Combine(lmFolder, "config.json"), "the LLaMA folder"));
        bool tiedInSource = lmConfig.TieWordEmbeddings;
        if (tiedInSource) {
            lmConfig = lmConfig.Clone();
            lmConfig.TieWordEmbeddings = false;
        }
        int vocab = lmConfig.VocabSize;
        // The checkpoint's own tokenizer files (with DSVC's added tokens), parsed once for the image row and "legacy".
        bool hasOwnTokenizer = File.Exists(Path.Combine(folder, TokenizerFactory.ModelFileName)) || File.Exists(Path.Combine(folder, TokenizerFactory.JsonFileName));
        var dsvcTokenizer = hasOwnTokenizer ? TokenizerFactory.FromFolder(folder) : null;
        var tokenizer = BuildTokenizer(folder, lmFolder, vocab, dsvcTokenizer);
        int sourceImageRow = SourceImageRow(dsvcTokenizer, vocab, source.Describe(EmbedKey), lmConfig.HiddenSize, where);

        var encoder = LoadVisionEncoder(source, visionFolder, where, log);
        LlamaForCausalLM? lm = null;
        VisualChatModel? model = null;
        try {
            lm = LoadLanguageModel(source, lmConfig, tiedInSource, lmFolder, where, log);
            var config = new VisualChatConfig
            {
                AttentionModeName = VisualChatConfig.AttentionModeToName(attention),
                Projection = ProjectionFactory.KindName(projection),
                VisionFeatureSelectName = "last_hidden_state",   // DSVC takes last_hidden_state, CLS included
                DropClsToken = false,
                LmVocabSize = vocab,
                ImageTokenId = vocab,
                PromptTemplate = VisualChatConfig.DsvcTemplateName,
            };
            config.UseVisionEncoder(encoder);
            model = new VisualChatModel(config, lm, encoder);
            lm = null;
            try { StateDict.Load(model.projection, source, new LoadOptions { MapName = name => ProjectionPrefix + name, IgnoreUnexpectedWhere = name => !name.StartsWith(ProjectionPrefix, StringComparison.Ordinal) }); }
            catch (InvalidDataException e) { throw new InvalidDataException($"{where}: the {config.Projection} projection: {e.Message}", e); }

            using (no_grad())
            using (NewDisposeScope())
            using (var embeddings = source.Read(EmbedKey, ScalarType.Float32)) {
                var target = model.lm.model.embed_tokens.weight!;
                target.narrow(0, 0, vocab).copy_(embeddings.narrow(0, 0, vocab));
                target.narrow(0, vocab, 1).copy_(embeddings.narrow(0, sourceImageRow, 1));
            }
            log($"projection: {config.Projection}, attention: {config.AttentionModeName}; token embeddings: '{EmbedKey}' rows 0–{vocab - 1}, '<image>' from row {sourceImageRow}");
            model.Tokenizer = tokenizer;
            model.ImageProcessor = VisionEncoderFolder.LoadProcessor(visionFolder, encoder.ImageSize);
        } catch {
            if (model is not null) {
                model.Dispose();
            } else {
                lm?.Dispose();
                ((nn.Module)encoder).Dispose();
            }
            throw;
        }
        model.ApplyDefaultTrainability();
        model.eval();
        return model;
    }

    /// <summary>train_args.pt (vars(args) of DSVC's main.py) as a dict; empty when absent or unreadable (the caller
    /// then asks for what it needs by option).</summary>
    static Dictionary<string, object?> ReadTrainArgs(string folder, Action<string> log)
    {
        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        string path = Path.Combine(folder, TrainArgsFile);
        if (!File.Exists(path)) return result;
        try {
            if (TorchBinFile.LoadObject(path) is PickleDict dict)
                foreach (var (key, value) in dict) if (key is string name) result[name] = value;
        } catch (InvalidDataException e) {
            log($"{path} not used: {e.Message}");
        }
        return result;
    }

    static void CheckPrefixes(ITensorSource source, string where)
    {
        // Under ZeRO-3, save_hf_format writes each partitioned parameter as an empty tensor; save_zero_three_model then
        // overwrites the file with gathered ones. An empty tensor means that second save never happened.
        var empty = source.Entries.Where(e => e.Shape.Contains(0L)).Select(e => e.Name).Take(3).ToList();
        if (empty.Count > 0)
            throw new InvalidDataException($"{where}: {string.Join(", ", empty)} … are empty: a ZeRO-3 run's first save, before save_zero_three_model gathered the partitions. Use the {WeightsFile} that save_zero_three_model wrote (or re-save it gathered).");
        var foreign = source.Entries.Select(e => e.Name)
            .Where(n => !n.StartsWith(VisionPrefix, StringComparison.Ordinal) && !n.StartsWith(DecoderPrefix, StringComparison.Ordinal)
                && n != EmbedKey && !n.StartsWith(ProjectionPrefix, StringComparison.Ordinal))
            .Take(5).ToList();
        if (foreign.Count > 0)
            throw new InvalidDataException($"{where}: tensors outside DeepSpeedViLModel's parts (vis_encoder., lang_decoder., lang_embed., projection.): {string.Join(", ", foreign)}; a GPT-2/OPT position embedding or another model's keys cannot be imported.");
    }

    static ProjectionKind DetectProjection(ITensorSource source, string where)
    {
        if (source.Contains(ProjectionPrefix + "query")) return ProjectionKind.Perceiver;
        if (source.Contains(ProjectionPrefix + "vis_layer.self_attn.q_proj.weight")) return ProjectionKind.Vit;
        if (source.Contains(ProjectionPrefix + "0.weight")) return ProjectionKind.Baseline;
        throw new InvalidDataException($"{where}: no projection tensors ('{ProjectionPrefix}0.weight' for --vis_proj baseline, '{ProjectionPrefix}vis_layer.*' for vit, '{ProjectionPrefix}query' for perceiver).");
    }

    static string ResolveFolder(string? given, Dictionary<string, object?> args, string argName, string option, string what, string folder)
    {
        if (given is not null) {
            if (!Directory.Exists(given)) throw new DirectoryNotFoundException($"{option} {given}: no such folder; pass {what}.");
            return given;
        }
        if (args.TryGetValue(argName, out var trained) && trained is string path && Directory.Exists(path)) return path;
        string named = args.TryGetValue(argName, out var value) && value is string p ? $" ({TrainArgsFile} names '{p}', which is not on this machine)" : "";
        throw new InvalidDataException($"{folder}: pass {option} DIR, {what}{named}.");
    }

    static string RequireFile(string path, string what) =>
        File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing; {what} needs it.", path);

    /// <summary>The LLaMA tokenizer.model (the checkpoint's copy, else the LM folder's) with "&lt;image&gt;" added as id
    /// vocab_size; DSVC's other added tokens are left out (see the remarks).</summary>
    static SentencePieceTokenizer BuildTokenizer(string folder, string lmFolder, int vocab, SentencePieceTokenizer? dsvcTokenizer)
    {
        string? dir = new[] { folder, lmFolder }.FirstOrDefault(d => File.Exists(Path.Combine(d, TokenizerFactory.ModelFileName)))
            ?? throw new FileNotFoundException($"Neither {folder} nor {lmFolder} holds {TokenizerFactory.ModelFileName}; copy the LLaMA tokenizer.model next to {WeightsFile}.");
        var tokenizer = SentencePieceTokenizer.FromFile(Path.Combine(dir, TokenizerFactory.ModelFileName));
        var configured = dir == folder && dsvcTokenizer is not null ? dsvcTokenizer : TokenizerFactory.FromFolder(dir);
        tokenizer.DummyPrefixOnEverySegment = configured.DummyPrefixOnEverySegment;   // tokenizer_config.json's "legacy"
        if (tokenizer.BaseVocabSize != vocab)
            throw new InvalidDataException($"{Path.Combine(dir, TokenizerFactory.ModelFileName)} has {tokenizer.BaseVocabSize} pieces but {Path.Combine(lmFolder, "config.json")} says vocab_size {vocab}.");
        tokenizer.AddSpecialTokens([ConversationTemplate.ImagePlaceholder]);
        return tokenizer;
    }

    /// <summary>The row of lang_embed that embeds "&lt;image&gt;": its id in the checkpoint's tokenizer files, else the
    /// one DSVC's add_special_token gives it (vocab_size + 1, after "### Image:").</summary>
    static int SourceImageRow(SentencePieceTokenizer? dsvcTokenizer, int vocab, TensorEntry embed, int hidden, string where)
    {
        int row = dsvcTokenizer?.TokenToId(ConversationTemplate.ImagePlaceholder) ?? vocab + 1;
        if (embed.Shape is not [var rows, var width] || width != hidden || rows <= row || rows < vocab)
            throw new InvalidDataException($"{where}: '{EmbedKey}' is {DTypes.FormatShape(embed.Shape)}; it should have at least {Math.Max(row + 1, vocab)} rows (vocabulary {vocab} + DSVC's added tokens, '<image>' at {row}) of width {hidden}.");
        return row;
    }

    static IVisionEncoder LoadVisionEncoder(ITensorSource source, string visionFolder, string where, Action<string> log)
    {
        string? kind = source.Contains(ClipProbe) ? ClipVisionModel.KindName : source.Contains(QwenProbe) ? QwenVisionTransformer.KindName : null;
        if (kind is null) {
            if (source.Entries.Any(e => e.Name.StartsWith(VisionPrefix, StringComparison.Ordinal)))
                throw new InvalidDataException($"{where}: the vis_encoder.* tensors are neither a CLIP vision model ('{ClipProbe}') nor DSVC's Qwen-VL tower ('{QwenProbe}').");
            log($"vision encoder: not in the checkpoint, read from {visionFolder}");
            return VisionEncoderFolder.Load(visionFolder).Encoder;
        }
        string configPath = RequireFile(Path.Combine(visionFolder, VisionEncoderFolder.ConfigFile), "the vision encoder folder");
        string json = File.ReadAllText(configPath);
        var config = new VisualChatConfig { VisionEncoder = kind, LmVocabSize = 1, ImageTokenId = 1 };
        try {
            if (kind == ClipVisionModel.KindName) config.ClipVision = ClipVisionConfig.Parse(json);
            else config.QwenVision = QwenVisionConfig.Parse(json);
        } catch (Exception e) when (e is InvalidDataException or System.Text.Json.JsonException) {
            throw new InvalidDataException($"{configPath}: {e.Message}", e);
        }
        using var generator = new Generator(0);
        var encoder = VisionEncoderFactory.Create(config, generator);
        try {
            StateDict.Load((nn.Module)encoder, source, new LoadOptions
            {
                MapName = name => VisionPrefix + name,
                // Older transformers kept CLIP's position_ids buffer (an arange); LoRA factors are already fused.
                IgnoreUnexpectedWhere = name => !name.StartsWith(VisionPrefix, StringComparison.Ordinal)
                    || name == VisionPrefix + "vision_model.embeddings.position_ids" || IsLora(name),
            });
        } catch (InvalidDataException e) {
            ((nn.Module)encoder).Dispose();
            throw new InvalidDataException($"{where} vis_encoder.* against {configPath}: {e.Message}", e);
        }
        log($"vision encoder: {kind} from the checkpoint (config {configPath})");
        return encoder;
    }

    static LlamaForCausalLM LoadLanguageModel(ITensorSource source, LlamaConfig config, bool tiedInSource, string lmFolder, string where, Action<string> log)
    {
        var lm = new LlamaForCausalLM(config, seed: null, initialize: false);
        try {
            bool inCheckpoint = source.Entries.Any(e => e.Name.StartsWith(LmProbe, StringComparison.Ordinal));
            using var folderSource = inCheckpoint ? null : TensorFiles.Open(lmFolder);
            var decoder = folderSource ?? source;
            string prefix = inCheckpoint ? DecoderPrefix : "";
            string from = inCheckpoint ? where : lmFolder;
            try {
                StateDict.Load(lm, decoder, new LoadOptions
                {
                    // The LM's own embed_tokens is unused by DSVC (lang_embed replaces it); the head is read below.
                    MapName = name => name == "model.embed_tokens.weight" || name.StartsWith("lm_head.", StringComparison.Ordinal) ? null : prefix + name,
                    IgnoreUnexpectedWhere = name => !name.StartsWith(prefix, StringComparison.Ordinal) || name == prefix + "model.embed_tokens.weight"
                        || name == prefix + "lm_head.weight" || name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal) || IsLora(name),
                });
            } catch (InvalidDataException e) {
                throw new InvalidDataException($"{from}: the LLaMA weights: {e.Message}", e);
            }

            string headKey = decoder.Contains(prefix + "lm_head.weight") ? prefix + "lm_head.weight"
                : tiedInSource && decoder.Contains(prefix + "model.embed_tokens.weight") ? prefix + "model.embed_tokens.weight"
                : throw new InvalidDataException($"{from}: '{prefix}lm_head.weight' is missing{(tiedInSource ? $" (and so is the tied '{prefix}model.embed_tokens.weight')" : "")}.");
            var head = decoder.Describe(headKey);
            if (head.Shape is not [var rows, var width] || rows < config.VocabSize || width != config.HiddenSize)
                throw new InvalidDataException($"{from}: '{headKey}' is {DTypes.FormatShape(head.Shape)}; the LM head needs at least [{config.VocabSize}, {config.HiddenSize}].");
            using (no_grad())
            using (NewDisposeScope())
            using (var values = decoder.Read(headKey, ScalarType.Float32))
                lm.OutputEmbeddingWeight.copy_(values.narrow(0, 0, config.VocabSize));
            log($"language model: {(inCheckpoint ? "from the checkpoint" : $"not in the checkpoint, read from {lmFolder}")}; head '{headKey}' rows 0–{config.VocabSize - 1}");
            return lm;
        } catch {
            lm.Dispose();
            throw;
        }
    }

    static bool IsLora(string name) => name.EndsWith(".lora_right_weight", StringComparison.Ordinal) || name.EndsWith(".lora_left_weight", StringComparison.Ordinal);
}
