using TorchSharp;

namespace VisualChat.Weights;

/// <summary>One tensor stored in a checkpoint: its name, element type and shape as stored, and the file holding it.</summary>
public sealed record TensorEntry(string Name, torch.ScalarType DType, long[] Shape, string File);

/// <summary>
/// Read access to the tensors of a checkpoint (one file or a sharded set). Opening parses only headers; each
/// <see cref="Read"/> reads just that tensor's bytes from disk.
/// </summary>
public interface ITensorSource : IDisposable
{
    /// <summary>Every tensor in the checkpoint, in the order the checkpoint lists them.</summary>
    IReadOnlyList<TensorEntry> Entries { get; }

    bool Contains(string name);

    /// <summary>The entry called <paramref name="name"/>; throws <see cref="KeyNotFoundException"/> naming the tensor and the file(s).</summary>
    TensorEntry Describe(string name);

    /// <summary>
    /// Reads the tensor called <paramref name="name"/> into a new contiguous tensor that the caller owns, converted to
    /// <paramref name="dtype"/> and moved to <paramref name="device"/> when given (stored type, CPU otherwise).
    /// </summary>
    torch.Tensor Read(string name, torch.ScalarType? dtype = null, torch.Device? device = null);

    /// <summary>
    /// The stored tensor as a CPU view over a private memory mapping of its file (nothing is read until used; writes
    /// copy the touched pages and never reach the file), in its stored dtype; the caller owns the view. Null when this
    /// source cannot map it (a format without a flat layout, or data not aligned to its element size).
    /// </summary>
    torch.Tensor? TryMap(string name) => null;
}
