using System.Text.RegularExpressions;

namespace VisualChat.Inference.Chat;

public enum ChatCommandKind { Message, Image, Images, Reset, Save, Load, Params, Help, Quit, Unknown }

/// <summary>One line typed into the chat: a slash command with its arguments, or a message (with any image paths,
/// file/http(s) URLs or data URIs pasted into it taken out as attachments).</summary>
public sealed record ChatInput(ChatCommandKind Kind, string Text, IReadOnlyList<string> Arguments, IReadOnlyList<string> Attachments)
{
    static readonly string[] ImageExtensions = [".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"];
    static readonly Regex Token = new("\"[^\"]+\"|'[^']+'|\\S+", RegexOptions.Compiled);

    public static ChatInput Parse(string line, Func<string, bool>? fileExists = null)
    {
        fileExists ??= File.Exists;
        var trimmed = line.Trim();
        if (trimmed.StartsWith('/'))
        {
            var parts = Split(trimmed);
            var kind = parts[0].ToLowerInvariant() switch
            {
                "/image" or "/img" => ChatCommandKind.Image,
                "/images" => ChatCommandKind.Images,
                "/reset" or "/clear" => ChatCommandKind.Reset,
                "/save" => ChatCommandKind.Save,
                "/load" => ChatCommandKind.Load,
                "/params" or "/set" => ChatCommandKind.Params,
                "/help" or "/?" => ChatCommandKind.Help,
                "/quit" or "/exit" or "/q" => ChatCommandKind.Quit,
                _ => ChatCommandKind.Unknown,
            };
            // A message that merely starts with an absolute path is not a command.
            if (kind == ChatCommandKind.Unknown && fileExists(Unquote(parts[0])))
                return ParseMessage(trimmed, fileExists);
            return new ChatInput(kind, parts[0], parts.Skip(1).ToList(), []);
        }
        return ParseMessage(trimmed, fileExists);
    }

    static ChatInput ParseMessage(string text, Func<string, bool> fileExists)
    {
        var attachments = new List<string>();
        var kept = Token.Replace(text, match =>
        {
            var candidate = Unquote(match.Value);
            if (!LooksLikeImage(candidate, fileExists)) return match.Value;
            attachments.Add(candidate);
            return "";
        });
        var message = Regex.Replace(kept, @"[ \t]{2,}", " ").Trim();
        return new ChatInput(ChatCommandKind.Message, message, [], attachments);
    }

    static bool LooksLikeImage(string candidate, Func<string, bool> fileExists)
    {
        if (candidate.StartsWith("data:image/", StringComparison.OrdinalIgnoreCase)) return true;
        bool imageName = ImageExtensions.Any(e => StripQuery(candidate).EndsWith(e, StringComparison.OrdinalIgnoreCase));
        if (!imageName) return false;
        if (candidate.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || candidate.StartsWith("https://", StringComparison.OrdinalIgnoreCase)
            || candidate.StartsWith("file://", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        return fileExists(candidate);
    }

    static string StripQuery(string s)
    {
        int q = s.IndexOfAny(['?', '#']);
        return q < 0 ? s : s[..q];
    }

    static List<string> Split(string text) => Token.Matches(text).Select(m => Unquote(m.Value)).ToList();

    static string Unquote(string s) => s.Length >= 2 && (s[0] == '"' && s[^1] == '"' || s[0] == '\'' && s[^1] == '\'') ? s[1..^1] : s;
}
