using System.Reflection;
using System.Reflection.Emit;

namespace VisualChat.Tests.Architecture;

/// <summary>
/// The architecture the README draws, checked on the compiled assemblies: which namespace uses which (from signatures,
/// fields and every type, method and field token in method bodies), no cycles between namespaces, the layering rules,
/// and folders equal to namespaces in the sources.
/// </summary>
public sealed class ArchitectureTests
{
    static readonly Assembly Core = typeof(VisualChat.TorchScalars).Assembly;
    static readonly Assembly[] Product =
    [
        Core,
        typeof(VisualChat.Training.AdamW).Assembly,
        typeof(VisualChat.Demo.DemoRecipe).Assembly,
        typeof(VisualChat.Cli.Commands.CommandCatalog).Assembly,
        typeof(VisualChat.Server.VisualChatServer).Assembly,
    ];

    [Fact]
    public void CoreLibraryReferencesTorchSharpButNoBackendTrainingOrDemo()
    {
        var referenced = Core.GetReferencedAssemblies().Select(a => a.Name!).ToList();
        Assert.Contains("TorchSharp", referenced);
        Assert.DoesNotContain(referenced, name => name.StartsWith("VisualChat.", StringComparison.Ordinal)
            || name.StartsWith("ScottPlot", StringComparison.Ordinal) || name.StartsWith("SkiaSharp", StringComparison.Ordinal)
            || name.StartsWith("YamlDotNet", StringComparison.Ordinal) || name.StartsWith("Spectre", StringComparison.Ordinal));
    }

    [Fact]
    public void NamespacesHaveNoCycles()
    {
        var graph = NamespaceGraph(Product);
        var cycles = StronglyConnected(graph).Where(c => c.Count > 1).ToList();
        Assert.True(cycles.Count == 0, "Namespace cycles:\n" + string.Join("\n", cycles.Select(c =>
            string.Join(", ", c) + "\n  because " + string.Join("; ", Edges(graph, c)))));
    }

    /// <summary>The arrows of the README's architecture section: what a namespace (and those below it) must not use.</summary>
    [Theory]
    [InlineData("VisualChat.Weights", "VisualChat.Text VisualChat.Conversations VisualChat.Vision VisualChat.Attention VisualChat.Model VisualChat.Inference")]
    [InlineData("VisualChat.Text", "VisualChat.Conversations VisualChat.Vision VisualChat.Attention VisualChat.Model VisualChat.Inference")]
    [InlineData("VisualChat.Conversations", "VisualChat.Vision VisualChat.Attention VisualChat.Model VisualChat.Inference")]
    [InlineData("VisualChat.Attention", "VisualChat.Text VisualChat.Conversations VisualChat.Vision VisualChat.Model VisualChat.Inference")]
    [InlineData("VisualChat.Vision", "VisualChat.Text VisualChat.Conversations VisualChat.Attention VisualChat.Model VisualChat.Inference")]
    [InlineData("VisualChat.Model", "VisualChat.Inference")]
    [InlineData("VisualChat.Data", "VisualChat.Training VisualChat.Demo VisualChat.Benchmarks VisualChat.Cli")]
    [InlineData("VisualChat.Training", "VisualChat.Demo VisualChat.Benchmarks VisualChat.Cli")]
    [InlineData("VisualChat.Demo", "VisualChat.Cli")]
    [InlineData("VisualChat.Benchmarks", "VisualChat.Cli")]
    [InlineData("VisualChat.Server", "VisualChat.Data VisualChat.Training VisualChat.Demo VisualChat.Benchmarks VisualChat.Cli")]
    public void NamespaceDoesNotUse(string from, string forbidden)
    {
        var graph = NamespaceGraph(Product);
        var violations = graph.Where(kv => Within(kv.Key, from))
            .SelectMany(kv => kv.Value.Where(to => forbidden.Split(' ').Any(f => Within(to.Key, f)))
                .Select(to => $"{kv.Key} → {to.Key} ({to.Value})"))
            .ToList();
        Assert.True(violations.Count == 0, $"{from} must not use {forbidden}:\n" + string.Join("\n", violations));
    }

    [Fact]
    public void FoldersEqualNamespaces()
    {
        var root = FindRepoRoot();
        var mismatches = new List<string>();
        foreach (var project in Directory.GetDirectories(Path.Combine(root, "src")))
        {
            string rootNamespace = Path.GetFileName(project) switch { "VisualChat.Cli" => "VisualChat.Cli", "VisualChat.Server" => "VisualChat.Server", _ => "VisualChat" };
            foreach (var file in Directory.EnumerateFiles(project, "*.cs", SearchOption.AllDirectories))
            {
                var relative = Path.GetRelativePath(project, Path.GetDirectoryName(file)!);
                if (relative.Split(Path.DirectorySeparatorChar).Any(p => p is "bin" or "obj")) continue;
                var expected = relative == "." ? rootNamespace : rootNamespace + "." + relative.Replace(Path.DirectorySeparatorChar, '.');
                var declared = File.ReadLines(file).FirstOrDefault(l => l.StartsWith("namespace ", StringComparison.Ordinal))?["namespace ".Length..].TrimEnd(';', ' ');
                if (declared is null && Path.GetFileName(file) == "Program.cs") continue;   // top-level statements
                if (declared != expected) mismatches.Add($"{Path.GetRelativePath(root, file)}: namespace {declared ?? "(none)"}, folder says {expected}");
            }
        }
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
    }

    static bool Within(string ns, string prefix) => ns == prefix || ns.StartsWith(prefix + ".", StringComparison.Ordinal);

    static IEnumerable<string> Edges(Dictionary<string, Dictionary<string, string>> graph, IReadOnlyCollection<string> component) =>
        component.SelectMany(from => graph[from].Where(to => component.Contains(to.Key)).Select(to => $"{from} → {to.Key} ({to.Value})"));

    const BindingFlags All = BindingFlags.DeclaredOnly | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static;

    /// <summary>namespace → (used namespace → one example "Type.member uses Type").</summary>
    static Dictionary<string, Dictionary<string, string>> NamespaceGraph(IEnumerable<Assembly> assemblies)
    {
        var graph = new Dictionary<string, Dictionary<string, string>>();
        foreach (var assembly in assemblies)
        {
            foreach (var type in assembly.GetTypes())
            {
                var from = NamespaceOf(type);
                if (from is null) continue;
                var edges = graph.TryGetValue(from, out var e) ? e : graph[from] = new();
                void Use(Type? used, string where)
                {
                    foreach (var t in Expand(used))
                        if (NamespaceOf(t) is { } to && to != from && !edges.ContainsKey(to)) edges[to] = $"{type.Name}.{where} uses {t.Name}";
                }
                Use(type.BaseType, "base");
                foreach (var i in type.GetInterfaces()) Use(i, "interface");
                foreach (var field in type.GetFields(All)) Use(field.FieldType, field.Name);
                foreach (var property in type.GetProperties(All)) Use(property.PropertyType, property.Name);
                foreach (var method in type.GetMethods(All).Cast<MethodBase>().Concat(type.GetConstructors(All)))
                {
                    if (method is MethodInfo info) Use(info.ReturnType, method.Name);
                    foreach (var parameter in method.GetParameters()) Use(parameter.ParameterType, method.Name);
                    foreach (var used in BodyTypes(method)) Use(used, method.Name);
                }
            }
        }

        return graph;
    }

    /// <summary>The VisualChat namespace a type belongs to (nested and compiler-generated types: their outer type's).</summary>
    static string? NamespaceOf(Type type)
    {
        while (type.DeclaringType is { } outer) type = outer;
        var ns = type.Namespace;
        return ns is not null && (ns == "VisualChat" || ns.StartsWith("VisualChat.", StringComparison.Ordinal)) && !ns.StartsWith("VisualChat.Tests", StringComparison.Ordinal) ? ns : null;
    }

    static IEnumerable<Type> Expand(Type? type)
    {
        if (type is null) yield break;
        if (type.HasElementType) { foreach (var t in Expand(type.GetElementType())) yield return t; yield break; }
        if (type.IsGenericParameter) yield break;
        yield return type;
        if (type.IsGenericType)
        {
            foreach (var argument in type.GetGenericArguments())
                foreach (var t in Expand(argument)) yield return t;
        }
    }

    /// <summary>Declaring types of every method, field and type token in the body.</summary>
    static IEnumerable<Type> BodyTypes(MethodBase method)
    {
        var (typeArgs, methodArgs) = IlInstructions.GenericContext(method);
        foreach (var (_, op, token) in IlInstructions.Read(method))
        {
            if (op.OperandType is not (OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok)) continue;
            Type? used = null;
            try
            {
                var member = method.Module.ResolveMember(token, typeArgs, methodArgs);
                used = member as Type ?? member?.DeclaringType;
            }
            catch (Exception e) when (e is ArgumentException or TypeLoadException or FileNotFoundException or BadImageFormatException) { }
            if (used is not null) yield return used;
        }
    }

    /// <summary>Tarjan's strongly connected components.</summary>
    static List<List<string>> StronglyConnected(Dictionary<string, Dictionary<string, string>> graph)
    {
        int index = 0;
        var indices = new Dictionary<string, int>();
        var low = new Dictionary<string, int>();
        var stack = new Stack<string>();
        var onStack = new HashSet<string>();
        var result = new List<List<string>>();
        void Visit(string v)
        {
            indices[v] = low[v] = index++;
            stack.Push(v); onStack.Add(v);
            foreach (var w in graph.TryGetValue(v, out var e) ? e.Keys.ToList() : new List<string>())
            {
                if (!indices.ContainsKey(w)) { Visit(w); low[v] = Math.Min(low[v], low[w]); }
                else if (onStack.Contains(w))
                {
                    low[v] = Math.Min(low[v], indices[w]);
                }
            }
            if (low[v] != indices[v]) return;
            var component = new List<string>();
            string x;
            do { x = stack.Pop(); onStack.Remove(x); component.Add(x); } while (x != v);
            result.Add(component);
        }
        foreach (var v in graph.Keys.ToList()) if (!indices.ContainsKey(v)) Visit(v);
        return result;
    }

    static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "VisualChat.sln"))) return dir.FullName;
        throw new InvalidOperationException($"No VisualChat.sln above {AppContext.BaseDirectory}.");
    }
}
