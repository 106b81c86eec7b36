using VisualChat.Cli.Commands;

namespace VisualChat.Tests.Training;

public class TrainCommandTests
{
    [Fact]
    public void OutOfRangeConfigIsRejectedBeforeAnythingLoads()
    {
        var path = Path.Combine(Path.GetTempPath(), $"train-{Guid.NewGuid():N}.json");
        // model.path does not exist: validation of learning_rate must fail first, and nothing is read.
        File.WriteAllText(path, "{\"model\": {\"kind\": \"llama-lm\", \"path\": \"/nonexistent/model\"}, \"learning_rate\": 0.001}");
        try
        {
            var error = new StringWriter();
            var parse = TrainCommand.Create().Parse(["--config", path, "--set", "learning_rate=-1"]);
            parse.InvocationConfiguration.Error = error;
            Assert.Equal(2, parse.Invoke());
            Assert.Contains("'learning_rate'", error.ToString());

            error = new StringWriter();
            parse = TrainCommand.Create().Parse(["--config", path]);
            parse.InvocationConfiguration.Error = error;
            Assert.Equal(2, parse.Invoke());
            Assert.Contains("'model.path'", error.ToString());
        }
        finally { File.Delete(path); }
    }
}
