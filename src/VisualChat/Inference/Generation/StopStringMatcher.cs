namespace VisualChat.Inference.Generation;

/// <summary>
/// Finds stop strings in streamed text that may span any number of deltas. Text is released only once it cannot be
/// the start of a stop string: a suffix that is a prefix of one is held back until the next delta decides. The stop
/// string itself and anything after it are never released.
/// </summary>
public sealed class StopStringMatcher(IReadOnlyList<string> stopStrings)
{
    string pending = "";

    /// <summary>The stop string found, once one was.</summary>
    public string? Found { get; private set; }

    /// <summary>Adds <paramref name="delta"/>; returns the text that is safe to emit.</summary>
    public string Add(string delta)
    {
        if (Found is not null || delta.Length == 0) return "";
        if (stopStrings.Count == 0) return delta;
        pending += delta;
        int at = -1;
        foreach (var stop in stopStrings) {
            int i = pending.IndexOf(stop, StringComparison.Ordinal);
            if (i >= 0 && (at < 0 || i < at)) { at = i; Found = stop; }
        }
        if (at >= 0) {
            var before = pending[..at];
            pending = "";
            return before;
        }
        int hold = HeldSuffix(pending);
        var release = pending[..^hold];
        pending = pending[^hold..];
        return release;
    }

    /// <summary>The held-back text at the end of the stream (no stop string was completed).</summary>
    public string Flush()
    {
        var rest = Found is null ? pending : "";
        pending = "";
        return rest;
    }

    /// <summary>Length of the longest suffix of <paramref name="text"/> that is a proper prefix of a stop string.</summary>
    int HeldSuffix(string text)
    {
        int best = 0;
        foreach (var stop in stopStrings)
        {
            for (int length = Math.Min(stop.Length - 1, text.Length); length > best; length--)
                if (string.CompareOrdinal(text, text.Length - length, stop, 0, length) == 0) { best = length; break; }
        }

        return best;
    }
}
