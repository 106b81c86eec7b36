using TorchSharp;
using VisualChat.Model;
using static TorchSharp.torch;

namespace VisualChat.Tests.Multimodal;

/// <summary>Model construction draws from its own generator: the same seed gives the same weights whatever other threads do to libtorch's global generator.</summary>
/// <remarks>Runs alone: its hammering thread would disturb other tests that seed the global generator.</remarks>
[Collection(GlobalGeneratorCollection.Name)]
public class SeededConstructionTests
{
    static Dictionary<string, Tensor> Weights(nn.Module model) =>
        model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

    static void AssertSame(Dictionary<string, Tensor> a, Dictionary<string, Tensor> b)
    {
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (name, tensor) in a) Assert.True(tensor.allclose(b[name], rtol: 0, atol: 0), $"{name} differs between two constructions with the same seed");
    }

    [Theory]
    [InlineData(AttentionMode.Mmca)]
    [InlineData(AttentionMode.CausalCross)]
    public async Task SameSeedSameWeights_WhileAnotherThreadReseedsAndDrawsFromTheGlobalGenerator(AttentionMode mode)
    {
        using var stop = new CancellationTokenSource();
        long draws = 0;
        var hammer = Task.Run(() => {
            for (long i = 0; !stop.IsCancellationRequested; i++) {
                manual_seed(i);
                using var noise = randn(64, 64);
                using var more = rand(257);
                Interlocked.Increment(ref draws);
            }
        });
        try {
            Dictionary<string, Tensor> first, second, other;
            while (Interlocked.Read(ref draws) == 0) Thread.Yield();
            using (var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 17, mode)) first = Weights(model);
            using (var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 17, mode)) second = Weights(model);
            using (var model = VisualChatPresets.Create(VisualChatPresets.Tiny, seed: 18, mode)) other = Weights(model);
            Assert.True(Interlocked.Read(ref draws) > 1, "the other thread must really be using the global generator meanwhile");
            AssertSame(first, second);
            // Every randomly initialised part depends on the seed (LM, encoder, projection, cross-attention).
            foreach (var prefix in new[] { "lm.model.layers.0.self_attn.q_proj", "vision.", "projection.0.weight" }.Concat(mode == AttentionMode.CausalCross ? ["cross_attn.0.q_proj"] : []))
                Assert.Contains(first.Keys, name => name.StartsWith(prefix, StringComparison.Ordinal) && !first[name].allclose(other[name], rtol: 0, atol: 0));
        } finally {
            stop.Cancel();
            await hammer;
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GlobalGeneratorCollection
{
    public const string Name = "global generator";
}
