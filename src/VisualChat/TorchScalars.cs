using TorchSharp;

namespace VisualChat;

/// <summary>
/// Scalars held for the life of the process. TorchSharp's <see cref="Scalar"/> owns a native c10::Scalar that its
/// finalizer frees, and TorchSharp ops neither track it in DisposeScopes nor keep it alive during the native call: a
/// temporary Scalar (an implicit conversion such as <c>x * 0.5</c>, or TorchSharp's own implicit <c>alpha: 1</c> in
/// <c>a + b</c>) can be finalized by a GC on another thread while libtorch reads it. Pass these (or a
/// <c>using var s = value.ToScalar();</c> local, or a module's readonly Scalar field) to the Scalar overloads instead.
/// Their element types match what TorchSharp's convenience overloads pass (int 0 and 1), so dtype promotion is unchanged.
/// </summary>
public static class TorchScalars
{
    /// <summary>Int 0: <c>arange</c>'s default start.</summary>
    public static readonly Scalar Zero = 0.ToScalar();

    /// <summary>Int 1: <c>add</c>'s default alpha and <c>arange</c>'s default step.</summary>
    public static readonly Scalar One = 1.ToScalar();
}
