using System.Text;

namespace VisualChat.Inference.Evaluation;

/// <summary>RFC 4180 CSV: fields with a comma, quote, CR or LF are quoted and inner quotes doubled; lines end in CRLF-free "\n".</summary>
public sealed class CsvWriter : IDisposable
{
    readonly TextWriter _writer;

    public CsvWriter(TextWriter writer) => _writer = writer;

    public void WriteRow(params string?[] fields)
    {
        var line = new StringBuilder();
        for (int i = 0; i < fields.Length; i++)
        {
            if (i > 0) line.Append(',');
            line.Append(Escape(fields[i] ?? ""));
        }
        _writer.Write(line.Append('\n'));
    }

    public static string Escape(string field)
    {
        if (field.IndexOfAny([',', '"', '\r', '\n']) < 0) return field;
        return "\"" + field.Replace("\"", "\"\"") + "\"";
    }

    /// <summary>Parses CSV text written by <see cref="WriteRow"/> (or any RFC 4180 file) back into rows.</summary>
    public static List<string[]> Parse(string text)
    {
        var rows = new List<string[]>();
        var row = new List<string>();
        var field = new StringBuilder();
        bool quoted = false, any = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            any = true;
            if (quoted)
            {
                if (c == '"' && i + 1 < text.Length && text[i + 1] == '"') { field.Append('"'); i++; }
                else if (c == '"')
                {
                    quoted = false;
                }
                else
                {
                    field.Append(c);
                }
            }
            else if (c == '"')
            {
                quoted = true;
            }
            else if (c == ',') { row.Add(field.ToString()); field.Clear(); }
            else if (c == '\n' || c == '\r')
            {
                if (c == '\r' && i + 1 < text.Length && text[i + 1] == '\n') i++;
                row.Add(field.ToString()); field.Clear();
                rows.Add(row.ToArray()); row.Clear();
                any = false;
            }
            else
            {
                field.Append(c);
            }
        }
        if (any) { row.Add(field.ToString()); rows.Add(row.ToArray()); }
        return rows;
    }

    public void Dispose() => _writer.Flush();
}
