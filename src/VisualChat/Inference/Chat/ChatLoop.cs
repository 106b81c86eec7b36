using System.Globalization;
using VisualChat.Inference.Generation;
using VisualChat.Model;

namespace VisualChat.Inference.Chat;

/// <summary>
/// The interactive chat: reads lines (a terminal or scripted input), runs slash commands and streams answers.
/// Every error is reported and the chat goes on; only <c>/quit</c> or the end of input ends it.
/// </summary>
public sealed class ChatLoop(ChatSession session, TextReader input, TextWriter output, TextWriter error)
{
    public const string Help = """
        Commands:
          /image PATH...      attach images (paths, file:// or http(s) URLs, data URIs) to the next question
          /images             list the conversation's images with their numbers
          /reset              start a new conversation
          /save FILE          save the conversation (JSON)
          /load FILE          load a saved conversation and continue it
          /params [k=v ...]   show or set temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed
          /help               this help
          /quit               leave (also end of input)
        Anything else is a question; image paths or URLs pasted into it are attached.
        """;

    public void WriteBanner(string modelFolder)
    {
        var model = session.Model;
        output.WriteLine($"VisualChat — model {modelFolder}");
        output.WriteLine($"  attention {VisualChatConfig.AttentionModeToName(model.Config.AttentionMode)}, {model.ImageTokens} tokens per image, context {session.MaxContext} positions");
        output.WriteLine("  /help for commands, /quit to leave");
    }

    public void Run(CancellationToken cancellationToken = default)
    {
        while (!cancellationToken.IsCancellationRequested) {
            output.Write("> ");
            output.Flush();
            var line = input.ReadLine();
            if (line is null) { output.WriteLine(); break; }
            if (string.IsNullOrWhiteSpace(line)) continue;
            var command = ChatInput.Parse(line);
            try {
                if (!Execute(command, cancellationToken)) break;
            } catch (ContextFullException e) {
                error.WriteLine($"error: {e.Message} Type /reset to start a new conversation.");
            } catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or InvalidOperationException
                                           or UnauthorizedAccessException or UriFormatException or Vision.Imaging.ImageDecodeException or NotSupportedException) {
                error.WriteLine($"error: {e.Message}");
            }
            output.Flush();
        }
    }

    bool Execute(ChatInput command, CancellationToken cancellationToken)
    {
        switch (command.Kind) {
            case ChatCommandKind.Quit: return false;
            case ChatCommandKind.Help: output.WriteLine(Help); break;
            case ChatCommandKind.Unknown: error.WriteLine($"error: unknown command '{command.Text}'; /help lists the commands."); break;
            case ChatCommandKind.Reset: session.Reset(); output.WriteLine("Conversation reset."); break;
            case ChatCommandKind.Image:
                if (command.Arguments.Count == 0) { error.WriteLine("error: /image needs at least one path or URL."); break; }
                Attach(command.Arguments);
                break;
            case ChatCommandKind.Images:
                var images = session.Images;
                if (images.Count == 0) output.WriteLine("No images yet.");
                foreach (var image in images) output.WriteLine($"  Image {image.Number}: {image.Source}{(image.Pending ? " (attached to the next question)" : "")}");
                break;
            case ChatCommandKind.Save:
                if (command.Arguments.Count != 1) { error.WriteLine("error: /save needs one file name."); break; }
                session.ToTranscript().Save(command.Arguments[0]);
                output.WriteLine($"Saved {session.Rounds.Count} rounds to {command.Arguments[0]}.");
                break;
            case ChatCommandKind.Load:
                if (command.Arguments.Count != 1) { error.WriteLine("error: /load needs one file name."); break; }
                session.LoadTranscript(ChatTranscript.Load(command.Arguments[0]));
                output.WriteLine($"Loaded {session.Rounds.Count} rounds from {command.Arguments[0]}.");
                break;
            case ChatCommandKind.Params:
                if (command.Arguments.Count > 0) session.Parameters = SetParameters(session.Parameters, command.Arguments);
                output.WriteLine(FormatParameters(session.Parameters));
                break;
            case ChatCommandKind.Message:
                if (!Attach(command.Attachments)) break;
                if (command.Text.Length == 0) break;
                Ask(command.Text, cancellationToken);
                break;
        }
        return true;
    }

    /// <summary>Attaches every image or none: a bad one is reported and the others are not attached either.</summary>
    bool Attach(IReadOnlyList<string> sources)
    {
        var loaded = new List<(string, Vision.Imaging.RgbImage)>();
        foreach (var source in sources) {
            try { loaded.Add((source, ChatSession.LoadImage(source))); }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException or UriFormatException or Vision.Imaging.ImageDecodeException) {
                error.WriteLine($"error: image '{source}' not attached: {e.Message}");
                return false;
            }
        }
        foreach (var (source, image) in loaded) {
            var added = session.AddDecoded(source, image);
            output.WriteLine($"Image {added.Number} attached: {source}");
        }
        return true;
    }

    void Ask(string question, CancellationToken cancellationToken)
    {
        session.Ask(question, delta => {
            output.Write(delta);
            output.Flush();
        }, cancellationToken);
        output.WriteLine();
    }

    public static GenerationOptions SetParameters(GenerationOptions options, IEnumerable<string> assignments)
    {
        foreach (var assignment in assignments) {
            int eq = assignment.IndexOf('=');
            if (eq <= 0) throw new ArgumentException($"Parameter '{assignment}' should be key=value (keys: temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed).");
            var key = assignment[..eq].Trim().ToLowerInvariant().Replace('-', '_');
            var value = assignment[(eq + 1)..].Trim();
            options = key switch {
                "temperature" => options with { Temperature = Number(key, value) },
                "top_p" => options with { TopP = Number(key, value) },
                "top_k" => options with { TopK = Integer(key, value) },
                "max_new_tokens" => options with { MaxNewTokens = Integer(key, value) },
                "repetition_penalty" => options with { RepetitionPenalty = Number(key, value) },
                "seed" => options with { Seed = ulong.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var s) ? s
                    : throw new ArgumentException($"Parameter seed: '{value}' is not a non-negative integer.") },
                _ => throw new ArgumentException($"Unknown parameter '{key}' (keys: temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed)."),
            };
        }
        options.Validate();
        return options;
    }

    static double Number(string key, string value) => double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var v)
        ? v : throw new ArgumentException($"Parameter {key}: '{value}' is not a number.");

    static int Integer(string key, string value) => int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v)
        ? v : throw new ArgumentException($"Parameter {key}: '{value}' is not an integer.");

    public static string FormatParameters(GenerationOptions o) => string.Create(CultureInfo.InvariantCulture,
        $"temperature={o.Temperature} top_p={o.TopP} top_k={o.TopK} max_new_tokens={o.MaxNewTokens} repetition_penalty={o.RepetitionPenalty} seed={o.Seed}");
}
