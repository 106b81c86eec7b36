namespace VisualChat.Server;

/// <summary>Settings of <c>vchat serve</c>.</summary>
public sealed record ServerOptions
{
    /// <summary>The VisualChat model folder (visualchat.json, lm/, vision/).</summary>
    public required string ModelFolder { get; init; }
    /// <summary>Name the API reports and accepts as <c>model</c>; null: the folder's name.</summary>
    public string? ModelName { get; init; }
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>0: any free port (see <see cref="VisualChatServer.BaseAddress"/>).</summary>
    public int Port { get; init; } = 8000;
    /// <summary>When set, /v1/* requests need <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; init; }
    /// <summary>Most sequences decoding (or being prefilled) at once.</summary>
    public int MaxBatch { get; init; } = 8;
    /// <summary>Most images in one conversation; null: the model's max_images, else 8.</summary>
    public int? MaxImages { get; init; }
    /// <summary>Most requests waiting for a batch slot; more get 429.</summary>
    public int MaxQueue { get; init; } = 64;
    /// <summary>Memory budget of the conversation KV cache (prompts kept for the next turn); 0 turns reuse off.</summary>
    public int KvCacheMb { get; init; } = 1024;
    /// <summary>Memory budget of encoded image features kept by content hash (an image seen again, in any conversation,
    /// is not re-encoded); 0 turns it off.</summary>
    public int ImageCacheMb { get; init; } = 256;
    /// <summary>Local image paths (and file:// URLs) are read only under this folder; null: refused.</summary>
    public string? ImageRoot { get; init; }
    /// <summary>Fetch http(s) image URLs (off by default: a server fetching arbitrary URLs is an SSRF hole).</summary>
    public bool AllowRemoteImages { get; init; }
    /// <summary>Default max_tokens when the request names none (capped by the context room).</summary>
    public int DefaultMaxTokens { get; init; } = 256;

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ModelFolder)) throw new ArgumentException("--model: give the VisualChat model folder.");
        if (Port is < 0 or > 65535) throw new ArgumentOutOfRangeException(nameof(Port), $"--port must be in 0..65535 (got {Port}).");
        if (MaxBatch < 1) throw new ArgumentOutOfRangeException(nameof(MaxBatch), $"--max-batch must be ≥ 1 (got {MaxBatch}).");
        if (MaxImages is < 0) throw new ArgumentOutOfRangeException(nameof(MaxImages), $"--max-images must be ≥ 0 (got {MaxImages}).");
        if (MaxQueue < 0) throw new ArgumentOutOfRangeException(nameof(MaxQueue), $"--max-queue must be ≥ 0 (got {MaxQueue}).");
        if (KvCacheMb < 0) throw new ArgumentOutOfRangeException(nameof(KvCacheMb), $"--kv-cache-mb must be ≥ 0 (got {KvCacheMb}).");
        if (ImageCacheMb < 0) throw new ArgumentOutOfRangeException(nameof(ImageCacheMb), $"--image-cache-mb must be ≥ 0 (got {ImageCacheMb}).");
        if (ImageRoot is not null && !Directory.Exists(ImageRoot)) throw new DirectoryNotFoundException($"--image-root {ImageRoot} does not exist.");
    }
}
