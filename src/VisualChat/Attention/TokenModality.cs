namespace VisualChat.Attention;

/// <summary>What a sequence position holds. Stored per position (as int64 values) next to the ids and in the KV cache.</summary>
public enum TokenModality : long
{
    Padding = 0,
    Text = 1,
    Image = 2,
}
