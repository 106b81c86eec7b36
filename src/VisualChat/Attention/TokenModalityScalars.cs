using TorchSharp;

namespace VisualChat.Attention;

/// <summary>
/// The <see cref="TokenModality"/> values as int64 Scalars held for the process's life, for comparisons and fills on
/// modality tensors (a temporary Scalar may be finalized during the native call; see <see cref="TorchScalars"/>).
/// </summary>
internal static class TokenModalityScalars
{
    public static readonly Scalar Padding = ((long)TokenModality.Padding).ToScalar();
    public static readonly Scalar Text = ((long)TokenModality.Text).ToScalar();
    public static readonly Scalar Image = ((long)TokenModality.Image).ToScalar();
}
