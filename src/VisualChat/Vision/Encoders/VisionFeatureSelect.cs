namespace VisualChat.Vision.Encoders;

/// <summary>Which CLIP output an encoder hands to the projection.</summary>
public enum VisionFeatureSelect
{
    /// <summary>Output of the last encoder layer, before post_layernorm (HF last_hidden_state). DeepSpeed-VisualChat uses this, CLS included.</summary>
    LastHiddenState,
    /// <summary>Output of the second-to-last layer (HF hidden_states[-2]); LLaVA-1.5 uses it with the CLS token dropped.</summary>
    PenultimateLayer,
    /// <summary>post_layernorm applied to the CLS token (HF pooler_output), as one token.</summary>
    PooledOutput,
}
