using TorchSharp;
using TorchSharp.Modules;
using VisualChat.Attention;
using VisualChat.Conversations;
using VisualChat.Text;
using VisualChat.Vision;
using VisualChat.Vision.Encoders;
using VisualChat.Vision.Projection;
using static TorchSharp.torch;

namespace VisualChat.Model;

/// <summary>
/// DeepSpeed-VisualChat: a frozen vision encoder (<c>vision</c>), a trained projection (<c>projection</c>) into the
/// embedding space of a frozen LLaMA (<c>lm</c>), and for <c>causal+cross</c> per-layer gated cross-attention
/// (<c>cross_attn</c>). State-dict keys are those prefixes plus each part's own (HF) keys.
/// </summary>
/// <remarks>
/// <para>The image placeholder is an added token id (≥ the LM's vocab_size). <c>lm.model.embed_tokens</c> grows to
/// cover it, the new rows initialised to the mean of the existing rows; this one grown matrix is the only token
/// embedding, trained, and used for every token: prompts, text around images and each generated token. The LM head
/// keeps the original vocabulary: an untied head is <c>lm.lm_head</c>; a tied one is the first lm_vocab_size rows of
/// that same trained embedding matrix (so training the embeddings also moves the tied head).</para>
/// <para>Trainable by default: the projection, the token embeddings and the cross-attention layers; the encoder and the
/// rest of the LM have requires_grad false (an untied lm_head trains when <see cref="VisualChatConfig.TrainLmHead"/>).</para>
/// <para>Use <see cref="lm"/>'s own forward only for text: with tied embeddings its logits include the added rows.</para>
/// </remarks>
public sealed partial class VisualChatModel : nn.Module<VisualChatBatch, VisualChatOutput>
{
    public readonly nn.Module<Tensor, Tensor> vision;
    public readonly nn.Module<Tensor, Tensor> projection;
    public readonly LlamaForCausalLM lm;
    public readonly ModuleList<GatedCrossAttention>? cross_attn;

    public VisualChatConfig Config { get; }
    public LlamaConfig LmConfig => lm.Config;
    public IVisionEncoder VisionEncoder => (IVisionEncoder)vision;
    public IProjection Projection => (IProjection)projection;
    /// <summary>The language model's attention kernel (chosen by the config's attention mode).</summary>
    public IAttentionKernel AttentionKernel => lm.AttentionKernel;
    /// <summary>Optional: encoder outputs are reused for images seen before (a frozen encoder only).</summary>
    public VisionFeatureCache? FeatureCache { get; set; }
    /// <summary>Images that went through the vision encoder so far (cache hits excluded).</summary>
    public long EncodedImageCount { get; private set; }
    /// <summary>Embeddings one image becomes in the LM sequence.</summary>
    public int ImageTokens => Projection.OutputTokens(VisionEncoder.OutputTokens);
    public int HiddenSize => LmConfig.HiddenSize;
    /// <summary>Rows of the LM head: the LM's original vocabulary.</summary>
    public int OutputVocabSize => Config.LmVocabSize;
    public int EmbeddingRows => (int)lm.model.embed_tokens.weight!.shape[0];

    /// <summary>Builds a randomly initialised model from configs (the vision config comes from <paramref name="config"/>).
    /// Every part draws from its own generator seeded from <paramref name="seed"/>, never from libtorch's global one,
    /// so the same seed gives the same weights whatever other threads do.</summary>
    public VisualChatModel(VisualChatConfig config, LlamaConfig lmConfig, long? seed = null)
        : this(config, new LlamaForCausalLM(lmConfig, seed), CreateEncoder(config, seed), seed)
    {
    }

    // Generator streams of the parts a VisualChatModel initialises itself (the LM uses stream 0 of the same seed).
    const int VisionStream = 1, ProjectionStream = 2;

    /// <summary>Assembles a model around an existing (e.g. pretrained) LM with lm_vocab_size rows and a vision encoder.</summary>
    public VisualChatModel(VisualChatConfig config, LlamaForCausalLM lm, IVisionEncoder encoder, long? seed = null) : base(nameof(VisualChatModel))
    {
        Config = config.Validated();
        if (lm.Config.VocabSize != config.LmVocabSize)
            throw new ArgumentException($"{VisualChatConfig.FileName}: lm_vocab_size is {config.LmVocabSize} but the language model's config.json has vocab_size {lm.Config.VocabSize}.", nameof(lm));
        if (encoder is not nn.Module<Tensor, Tensor> encoderModule)
            throw new ArgumentException($"The vision encoder {encoder.GetType().Name} must be a TorchSharp module.", nameof(encoder));
        this.lm = lm;
        vision = encoderModule;
        using var generator = GeneratorInit.Create(seed, ProjectionStream);
        var created = ProjectionFactory.Create(config.ProjectionKind, encoder.OutputWidth, lm.Config.HiddenSize,
            new ProjectionOptions(config.ClipVision, config.PerceiverGridSize, config.PerceiverHeads), generator);
        projection = (nn.Module<Tensor, Tensor>)created;
        GrowEmbeddings(config.ImageTokenId + 1);

        register_module(nameof(vision), vision);
        register_module(nameof(projection), projection);
        register_module(nameof(lm), lm);
        if (config.AttentionMode == AttentionMode.CausalCross) {
            cross_attn = new ModuleList<GatedCrossAttention>(Enumerable.Range(0, lm.Config.NumHiddenLayers)
                .Select(_ => new GatedCrossAttention(lm.Config.HiddenSize, lm.Config.NumAttentionHeads, lm.Config.HeadDim, generator)).ToArray());
            register_module(nameof(cross_attn), cross_attn);
        }
        lm.AttentionKernel = AttentionKernelFactory.Create(config.AttentionMode, cross_attn);
        ApplyDefaultTrainability();
    }

    static IVisionEncoder CreateEncoder(VisualChatConfig config, long? seed)
    {
        using var generator = GeneratorInit.Create(seed, VisionStream);
        return VisionEncoderFactory.Create(config, generator);
    }

    void GrowEmbeddings(int rows)
    {
        var embedding = lm.model.embed_tokens;
        var old = embedding.weight!;
        if (old.shape[0] >= rows) return;
        using var noGrad = no_grad();
        var mean = old.mean(new long[] { 0 }, keepdim: true);
        var grown = cat(new[] { old, mean.expand(rows - old.shape[0], -1) }, 0);
        embedding.weight = new Parameter(grown.contiguous());
    }

    /// <summary>Switches a built model between <c>causal</c> and <c>mmca</c>, the two modes over the same parameters
    /// (e.g. to fine-tune a LLaVA checkpoint, trained causal, with DSVC's MMCA). <c>causal+cross</c> adds gated
    /// cross-attention layers, so it is chosen when a model is built, never switched.</summary>
    public void SetAttentionMode(AttentionMode mode)
    {
        if (mode == Config.AttentionMode) return;
        if (mode == AttentionMode.CausalCross || cross_attn is not null)
        {
            throw new InvalidOperationException($"attention_mode \"{Config.AttentionModeName}\" → \"{VisualChatConfig.AttentionModeToName(mode)}\": " +
                "causal+cross has its own gated cross-attention layers; build a new model for it (model.lm + model.vision) instead of switching a trained one.");
        }
        Config.AttentionModeName = VisualChatConfig.AttentionModeToName(mode);
        lm.AttentionKernel = AttentionKernelFactory.Create(mode, cross_attn);
    }

    /// <summary>Projection, token embeddings and cross-attention train; everything else is frozen.</summary>
    public void ApplyDefaultTrainability()
    {
        foreach (var parameter in lm.parameters()) parameter.requires_grad = false;
        lm.model.embed_tokens.weight!.requires_grad = true;
        if (Config.TrainLmHead && lm.lm_head is Linear head) head.weight!.requires_grad = true;
        VisionEncoder.Freeze();
        foreach (var parameter in projection.parameters()) parameter.requires_grad = true;
        if (cross_attn is not null) foreach (var parameter in cross_attn.parameters()) parameter.requires_grad = true;
    }

    /// <summary>[lm_vocab_size, hidden]: the untied head, or the first rows of the trained embedding matrix.</summary>
    public Tensor HeadWeight => lm.lm_head is null ? lm.model.embed_tokens.weight!.narrow(0, 0, Config.LmVocabSize) : lm.OutputEmbeddingWeight;

    /// <summary>Token embeddings [B, L, D] for ids [B, L] (added ids included) from the one trained matrix.</summary>
    public Tensor Embed(Tensor inputIds) => lm.model.embed_tokens.forward(inputIds);

    /// <summary>Frozen encoder (no grad; through <see cref="FeatureCache"/> when set), then the projection (with grad):
    /// pixels [N, 3, S, S] → [N, ImageTokens, D].</summary>
    public Tensor EncodeImages(Tensor pixels, IReadOnlyList<string>? keys = null)
    {
        using var scope = NewDisposeScope();
        Tensor features;
        if (FeatureCache is { } cache && VisionEncoder.IsFrozen) {
            long misses = cache.Misses;
            features = cache.GetOrEncode(VisionEncoder, pixels, keys);
            EncodedImageCount += cache.Misses - misses;
        } else {
            features = VisionEncoder.Encode(pixels);
            EncodedImageCount += pixels.shape[0];
        }
        return Projection.Project(features.to(ScalarType.Float32)).MoveToOuterDisposeScope();
    }

    /// <summary>Encodes and projects the batch's images and interleaves them with its text (the start of every forward).</summary>
    InterleavedInput Prepare(VisualChatBatch batch)
    {
        var imageEmbeds = batch.Pixels is { } pixels && pixels.shape[0] > 0 ? EncodeImages(pixels, batch.ImageKeys) : null;
        return Interleave(batch.InputIds, batch.Labels, batch.AttentionMask, batch.ImageCounts, imageEmbeds);
    }

    public override VisualChatOutput forward(VisualChatBatch batch)
    {
        using var scope = NewDisposeScope();
        var input = Prepare(batch);
        var logits = RunLanguageModel(input.InputsEmbeds, input.AttentionMask, input.Modality, input.Memory, cache: null, lastTokenOnly: false);
        Tensor? loss = null;
        long answerTokens = 0;
        if (input.Labels is { } labels) (loss, answerTokens) = CausalLMLoss.Shifted(logits, labels);
        return new VisualChatOutput(logits.MoveToOuterDisposeScope(), loss?.MoveToOuterDisposeScope(), answerTokens,
            new InterleavedInput(input.InputsEmbeds.MoveToOuterDisposeScope(), input.Modality.MoveToOuterDisposeScope(),
                input.Labels?.MoveToOuterDisposeScope(), input.AttentionMask.MoveToOuterDisposeScope(),
                input.Memory is { } m ? new CrossAttentionMemory(m.Embeddings.MoveToOuterDisposeScope(), m.Slots.MoveToOuterDisposeScope()) : null));
    }

    /// <summary>The training loss of <paramref name="batch"/> (see <see cref="CausalLMLoss"/>) without the logits of
    /// positions that have no target: what a trainer needs, for a fraction of <see cref="forward"/>'s head cost.</summary>
    /// <returns>The mean cross-entropy over answer tokens and how many there are.</returns>
    public (Tensor Loss, long AnswerTokens) Loss(VisualChatBatch batch)
    {
        if (batch.Labels is null) throw new ArgumentException("The batch has no labels to compute a loss on.", nameof(batch));
        using var scope = NewDisposeScope();
        var input = Prepare(batch);
        var hidden = lm.model.forward(new CausalLMInput(InputsEmbeds: input.InputsEmbeds, AttentionMask: input.AttentionMask,
            TokenModality: input.Modality, AttentionExtension: input.Memory)).LastHiddenState;
        var (loss, count) = CausalLMLoss.Shifted(hidden, input.Labels!, HeadWeight);
        return (loss.MoveToOuterDisposeScope(), count);
    }

    /// <summary>Runs the decoder on embeddings [B, L, D] and applies the head → logits [B, L (or 1), lm_vocab_size].
    /// <paramref name="modality"/> [B, L] must be given (the cache records it); <paramref name="memory"/> is the
    /// <c>causal+cross</c> image memory (ignored by the other modes). The kernel's per-forward state ends with the call.</summary>
    public Tensor RunLanguageModel(Tensor inputsEmbeds, Tensor? attentionMask, Tensor modality, CrossAttentionMemory? memory, KVCache? cache, bool lastTokenOnly) =>
        RunLanguageModel(new CausalLMInput(InputsEmbeds: inputsEmbeds, AttentionMask: attentionMask, Cache: cache, TokenModality: modality,
            LastTokenLogitsOnly: lastTokenOnly, AttentionExtension: memory));

    /// <summary>Runs the decoder on <paramref name="input"/> (embeddings, not ids: added rows are the model's) and applies
    /// the head over the LM's own vocabulary → logits [B, L (or 1 with LastTokenLogitsOnly), lm_vocab_size].</summary>
    public Tensor RunLanguageModel(CausalLMInput input)
    {
        using var scope = NewDisposeScope();
        var hidden = lm.model.forward(input).LastHiddenState;
        if (input.LastTokenLogitsOnly) hidden = hidden.narrow(1, hidden.shape[1] - 1, 1);
        return nn.functional.linear(hidden, HeadWeight).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Replaces each placeholder by its image's tokens — image k of a sample at that sample's placeholder k — and
    /// re-pads (right padding by default, left for generation) to a multiple of <paramref name="padToMultipleOf"/>.
    /// One gather builds the embeddings: index arrays are computed per sample on the host, then a single index_select
    /// picks rows from [text embeddings; image embeddings; a zero row for padding].
    /// </summary>
    /// <param name="imageEmbeds">[N, T, D] projected images of the whole batch, sample by sample.</param>
    /// <param name="slotOffset">Cache positions before this input (image memory slots are absolute).</param>
    public InterleavedInput Interleave(Tensor inputIds, Tensor? labels, Tensor? attentionMask, IReadOnlyList<int> imageCounts, Tensor? imageEmbeds,
        int padToMultipleOf = 8, bool leftPadding = false, long slotOffset = 0)
    {
        if (inputIds.dim() != 2) throw new ArgumentException($"input_ids must be [B, L], got [{string.Join(", ", inputIds.shape)}].", nameof(inputIds));
        int batch = (int)inputIds.shape[0], length = (int)inputIds.shape[1];
        if (imageCounts.Count != batch) throw new ArgumentException($"The batch has {batch} samples but image counts for {imageCounts.Count}.", nameof(imageCounts));
        int imageTotal = imageCounts.Sum();
        long imageRows = imageEmbeds?.shape[0] ?? 0;
        if (imageRows != imageTotal)
            throw new ArgumentException($"The samples hold {imageTotal} images in total but {imageRows} image embeddings were given.", nameof(imageEmbeds));
        if (Config.MaxImages is { } maxImages && imageCounts.Max() > maxImages)
            throw new ArgumentException($"A sample holds {imageCounts.Max()} images; {VisualChatConfig.FileName} allows max_images {maxImages}.", nameof(imageCounts));
        int tokensPerImage = (int)(imageEmbeds?.shape[1] ?? 0);

        var ids = HostLongs(inputIds);
        var mask = attentionMask is null ? null : HostLongs(attentionMask);
        var targets = labels is null ? null : HostLongs(labels);
        int imageId = Config.ImageTokenId;

        var lengths = new int[batch];
        for (int b = 0; b < batch; b++) {
            int placeholders = 0, count = 0;
            for (int t = 0; t < length; t++) {
                int i = b * length + t;
                if (mask is not null && mask[i] == 0) continue;
                if (ids[i] == imageId) { placeholders++; count += tokensPerImage; } else
                {
                    count++;
                }
            }
            if (placeholders != imageCounts[b])
                throw new ArgumentException($"Sample {b} has {placeholders} '{Config.ImageToken}' placeholders (id {imageId}) but {imageCounts[b]} images.", nameof(inputIds));
            lengths[b] = count;
        }
        int multiple = Math.Max(1, padToMultipleOf);
        int outLength = Math.Max(1, (lengths.Max() + multiple - 1) / multiple * multiple);
        long textRows = (long)batch * length, zeroRow = textRows + (long)imageTotal * tokensPerImage;
        var index = new long[batch * outLength];
        var modality = new long[batch * outLength];
        var outLabels = new long[batch * outLength];
        var outMask = new long[batch * outLength];
        Array.Fill(index, zeroRow);
        Array.Fill(outLabels, ConversationTemplate.IgnoreLabel);
        bool cross = Config.AttentionMode == AttentionMode.CausalCross;
        int memoryWidth = cross ? imageCounts.Max() * tokensPerImage : 0;
        var memoryIndex = new long[batch * memoryWidth];
        var memorySlots = new long[batch * memoryWidth];
        Array.Fill(memoryIndex, zeroRow);
        Array.Fill(memorySlots, CrossAttentionMemory.UnusedSlot);

        int imageBase = 0;
        for (int b = 0; b < batch; b++) {
            int position = leftPadding ? outLength - lengths[b] : 0, image = 0, memory = 0;
            for (int t = 0; t < length; t++) {
                int i = b * length + t;
                if (mask is not null && mask[i] == 0) continue;
                if (ids[i] == imageId) {
                    long first = textRows + (long)(imageBase + image) * tokensPerImage;
                    for (int j = 0; j < tokensPerImage; j++, position++) {
                        int o = b * outLength + position;
                        index[o] = first + j;
                        modality[o] = (long)TokenModality.Image;
                        outMask[o] = 1;
                        if (cross) {
                            memoryIndex[b * memoryWidth + memory] = first + j;
                            memorySlots[b * memoryWidth + memory] = slotOffset + position;
                            memory++;
                        }
                    }
                    image++;
                } else {
                    int o = b * outLength + position++;
                    index[o] = i;
                    modality[o] = (long)TokenModality.Text;
                    outMask[o] = 1;
                    if (targets is not null) outLabels[o] = targets[i];
                }
            }
            imageBase += imageCounts[b];
        }

        using var scope = NewDisposeScope();
        var device = inputIds.device;
        var textEmbeds = Embed(inputIds.to(ScalarType.Int64)).reshape(textRows, HiddenSize);
        var parts = new List<Tensor> { textEmbeds };
        if (imageEmbeds is not null && imageTotal > 0) parts.Add(imageEmbeds.to(textEmbeds.dtype).reshape(-1, HiddenSize));
        parts.Add(zeros(1, HiddenSize, dtype: textEmbeds.dtype, device: device));
        var table = cat(parts.ToArray(), 0);
        var gathered = table.index_select(0, tensor(index, device: device)).view(batch, outLength, HiddenSize);
        CrossAttentionMemory? crossMemory = null;
        if (cross)
        {
            crossMemory = new CrossAttentionMemory(
                table.index_select(0, tensor(memoryIndex, device: device)).view(batch, memoryWidth, HiddenSize).MoveToOuterDisposeScope(),
                tensor(memorySlots, new long[] { batch, memoryWidth }, device: device).MoveToOuterDisposeScope());
        }

        return new InterleavedInput(
            gathered.MoveToOuterDisposeScope(),
            tensor(modality, new long[] { batch, outLength }, device: device).MoveToOuterDisposeScope(),
            targets is null ? null : tensor(outLabels, new long[] { batch, outLength }, device: device).MoveToOuterDisposeScope(),
            tensor(outMask, new long[] { batch, outLength }, device: device).MoveToOuterDisposeScope(),
            crossMemory);
    }

    static long[] HostLongs(Tensor t)
    {
        using var host = t.to(ScalarType.Int64).cpu().contiguous();
        return host.data<long>().ToArray();
    }
}
