namespace VisualChat.Model;

/// <summary>
/// Where a decoder layer's weights live when they are not always resident: ZeRO-3 keeps 1/N of each frozen layer on
/// each of N ranks and gathers the whole layer only while it runs. <see cref="LlamaModel"/> calls
/// <see cref="Materialize"/> just before layer <c>i</c> runs (forward, and the recomputation of a checkpointed layer in
/// backward) and disposes the result just after, so at most one layer is whole at a time. The calls are collective in
/// ZeRO-3: every rank makes them in the same order.
/// </summary>
internal interface IDecoderLayerWeights
{
    /// <summary>Makes layer <paramref name="layer"/>'s parameters whole; disposing the result releases them again.</summary>
    IDisposable Materialize(int layer);
}
