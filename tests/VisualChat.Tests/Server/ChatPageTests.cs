using System.Text.Json.Nodes;
using Microsoft.Playwright;
using VisualChat.Tests.Chat;
using static Microsoft.Playwright.Assertions;

namespace VisualChat.Tests.Server;

/// <summary>
/// The web chat page in Debian's headless Chromium driven by Playwright: one image dropped and one picked, a question,
/// a streamed answer equal to the API's answer for the same conversation, and a follow-up that reuses the cache.
/// Set VCHAT_UPDATE_DOCS=1 to copy the screenshot to docs/measured/serve-page.png.
/// </summary>
public sealed class ChatPageTests(ServerTestHost host) : IClassFixture<ServerTestHost>
{
    const string Chromium = "/usr/bin/chromium";

    [Fact]
    public async Task Page_TwoImages_StreamedAnswer_FollowUp()
    {
        if (!File.Exists(Chromium))
            Assert.Fail($"The browser test needs Debian's Chromium at {Chromium}: run `apt-get install -y chromium` (CI: .ci/run installs it; Playwright's own browser download is not reachable here).");
        await using var server = await host.StartAsync();
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions {
            ExecutablePath = Chromium, Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"],
        });
        var page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1100, Height = 760 } });
        await page.GotoAsync(server.BaseAddress.ToString());
        await Expect(page.Locator("#model-name")).ToHaveTextAsync(ServerTestHost.ModelName);
        await page.ClickAsync("#settings summary");
        await page.FillAsync("#max-tokens", "16");

        byte[] first = ChatTestModel.Png(21), second = ChatTestModel.Png(22);
        // Image 1 is dropped onto the page, image 2 comes through the file picker.
        await page.EvaluateAsync(@"b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'first.png', { type: 'image/png' }));
            document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
        }", Convert.ToBase64String(first));
        await Expect(page.Locator("#pending .thumb")).ToHaveCountAsync(1);
        await page.SetInputFilesAsync("#file-input", new FilePayload { Name = "second.png", MimeType = "image/png", Buffer = second });
        await Expect(page.Locator("#pending .thumb")).ToHaveCountAsync(2);
        await Expect(page.Locator("#pending .thumb span")).ToHaveTextAsync(["Image 1", "Image 2"]);

        const string question = "What differs between Image 1 and Image 2?";
        await page.FillAsync("#prompt", question);
        await page.ClickAsync("#send");
        await Expect(page.Locator(".msg.assistant[data-done=true]")).ToHaveCountAsync(1, new() { Timeout = 60_000 });
        await Expect(page.Locator(".msg.user .thumb span")).ToHaveTextAsync(["Image 1", "Image 2"]);
        string shown = await page.Locator(".msg.assistant .text").First.TextContentAsync() ?? "";

        // The page streamed the same answer the API gives for this conversation.
        var body = ServerTestHost.Body(ServerTestHost.User(
            new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = ServerTestHost.DataUri(first) } },
            new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = ServerTestHost.DataUri(second) } },
            ServerTestHost.TextPart(question)));
        body["max_tokens"] = 16;
        body["temperature"] = 0;
        var (status, json, _) = await ServerTestHost.PostAsync(server, body.ToJsonString());
        Assert.Equal(200, status);
        Assert.Equal((string)json!["choices"]![0]!["message"]!["content"]!, shown);

        await page.FillAsync("#prompt", "Which one is brighter?");
        await page.PressAsync("#prompt", "Enter");
        await Expect(page.Locator(".msg.assistant[data-done=true]")).ToHaveCountAsync(2, new() { Timeout = 60_000 });
        string stats = await page.Locator(".msg.assistant .stats").Nth(1).TextContentAsync() ?? "";
        Assert.Matches(@"\(([1-9]\d*) cached\)", stats);   // the follow-up reused the first round's cache

        string shot = Path.Combine(host.Root, "serve-page.png");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = shot, FullPage = true });
        Assert.True(new FileInfo(shot).Length > 1000);
        if (Environment.GetEnvironmentVariable("VCHAT_UPDATE_DOCS") == "1") {
            string target = Path.Combine(ChatTestModel.RepoRoot(), "docs", "measured", "serve-page.png");
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(shot, target, overwrite: true);
        }
    }
}
