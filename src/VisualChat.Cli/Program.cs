using System.CommandLine;
using VisualChat.Cli.Commands;

var root = new RootCommand("vchat — train and chat with multi-image, multi-round vision-language models (DeepSpeed-VisualChat on .NET)");
foreach (var command in CommandCatalog.All())
    root.Subcommands.Add(command);
return root.Parse(args).Invoke();
