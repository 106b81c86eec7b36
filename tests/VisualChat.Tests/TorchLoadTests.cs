using TorchSharp;
using static TorchSharp.torch;

namespace VisualChat.Tests;

public class TorchLoadTests
{
    [Fact]
    public void NativeLibraryLoadsAndComputes()
    {
        using var scope = NewDisposeScope();
        var a = tensor(new float[] { 1, 2, 3, 4 }).reshape(2, 2);
        var product = a.matmul(a);
        Assert.Equal(new float[] { 7, 10, 15, 22 }, product.data<float>().ToArray());
    }
}
