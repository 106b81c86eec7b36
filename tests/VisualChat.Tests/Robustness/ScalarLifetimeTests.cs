using System.Reflection;
using System.Reflection.Emit;
using TorchSharp;

namespace VisualChat.Tests.Robustness;

/// <summary>
/// TorchSharp's <see cref="Scalar"/> wraps a native c10::Scalar* and frees it in its finalizer; it is not tracked by
/// DisposeScopes and the tensor ops do not GC.KeepAlive it. A temporary Scalar (from an implicit conversion like
/// <c>x * 0.125</c>, <c>x.pow(2)</c>, <c>clamp(0, 255)</c>, <c>add(y, alpha: a)</c>, or from <c>v.ToScalar()</c> passed
/// straight into an op) becomes unreachable as soon as the op has read its handle, so a GC triggered by any other thread
/// during the native call finalizes it while libtorch still reads it ("Unknown scalar type" crashes, or silently wrong
/// values). The project's convention therefore is:
/// <list type="bullet">
/// <item>no implicit conversion to Scalar anywhere in the VisualChat assembly (<c>Scalar.op_Implicit</c> is banned);</item>
/// <item>a Scalar is created only explicitly with <c>ToScalar()</c> and held while the op runs: either a
/// <c>using var s = value.ToScalar();</c> local (its Dispose at the end of the scope keeps it reachable), or a readonly
/// field of a long-lived object (a module constant created in the constructor).</item>
/// </list>
/// This test walks the IL of every method in the assembly (lambdas, closures, iterator and async state machines are
/// methods of compiler-generated nested types and are included) and reports every <c>Scalar.op_Implicit</c> call, every
/// <c>ToScalar()</c> call whose result is not immediately stored into a local or a field, and every call into a
/// TorchSharp method that makes such a temporary Scalar itself (<c>Tensor + Tensor</c> passes an implicit
/// <c>alpha: 1</c>, <c>Tensor * double</c> converts the double, <c>arange(n)</c> makes start and step): use the
/// overloads that take Scalars and pass held ones (<see cref="VisualChat.TorchScalars"/> holds the common constants).
/// </summary>
public sealed class ScalarLifetimeTests
{
    public static TheoryData<string> ProductAssemblies() => new()
    {
        typeof(VisualChat.TorchScalars).Assembly.GetName().Name!,          // VisualChat (core)
        typeof(VisualChat.Training.AdamW).Assembly.GetName().Name!,       // VisualChat.Training
        typeof(VisualChat.Demo.DemoRecipe).Assembly.GetName().Name!,      // VisualChat.Demo (demo, ablation, benchmarks)
        typeof(VisualChat.Cli.Commands.CommandCatalog).Assembly.GetName().Name!,  // vchat
        typeof(VisualChat.Server.ApiException).Assembly.GetName().Name!,  // VisualChat.Server
    };

    [Theory]
    [MemberData(nameof(ProductAssemblies))]
    public void ProductAssemblyCreatesNoTemporaryScalars(string assemblyName)
    {
        var assembly = AppDomain.CurrentDomain.GetAssemblies().Single(a => a.GetName().Name == assemblyName);
        var offenders = ScalarIlScanner.FindTemporaryScalars(assembly);
        Assert.True(offenders.Count == 0,
            $"{offenders.Count} method(s) in {assembly.GetName().Name} create a temporary TorchSharp Scalar that the GC may " +
            "finalize while libtorch still uses it. Replace implicit conversions with a held Scalar " +
            "(`using var s = value.ToScalar();` or a readonly field created once):\n  " + string.Join("\n  ", offenders));
    }

    [Fact]
    public void ScannerFlagsImplicitAndUnstoredScalarsButNotHeldOnes()
    {
        var flagged = ScalarIlScanner.FindTemporaryScalars(typeof(ScalarScannerSamples).Assembly)
            .Where(o => o.Contains(nameof(ScalarScannerSamples))).ToList();
        Assert.Contains(flagged, o => o.Contains(nameof(ScalarScannerSamples.ImplicitMultiply)) && o.Contains("op_Multiply"));
        Assert.Contains(flagged, o => o.Contains(nameof(ScalarScannerSamples.ImplicitInLambda)) && o.Contains("op_Implicit"));
        Assert.Contains(flagged, o => o.Contains(nameof(ScalarScannerSamples.UnstoredToScalar)) && o.Contains("ToScalar"));
        Assert.Contains(flagged, o => o.Contains(nameof(ScalarScannerSamples.TensorSum)) && o.Contains("Tensor.add(Tensor)"));
        Assert.Contains(flagged, o => o.Contains(nameof(ScalarScannerSamples.ScalarAsTensor)) && o.Contains("where a Tensor is expected"));
        Assert.DoesNotContain(flagged, o => o.Contains(nameof(ScalarScannerSamples.HeldToScalar)));
        Assert.DoesNotContain(flagged, o => o.Contains(".ctor"));
    }
}

/// <summary>Known-good and known-bad patterns the scanner must tell apart (never called, only scanned).</summary>
internal sealed class ScalarScannerSamples
{
    readonly Scalar _half;

    public ScalarScannerSamples() => _half = 0.5.ToScalar();

    public static torch.Tensor ImplicitMultiply(torch.Tensor x) => x * 0.125;

    public static Func<torch.Tensor, torch.Tensor> ImplicitInLambda() => x => x.pow(2);

    public static torch.Tensor UnstoredToScalar(torch.Tensor x, double v) => x.mul(v.ToScalar());

    public static torch.Tensor TensorSum(torch.Tensor a, torch.Tensor b) => a + b;

    public torch.Tensor ScalarAsTensor(torch.Tensor x, torch.Tensor end) => x.lerp(end, _half);

    public torch.Tensor HeldToScalar(torch.Tensor x, double v)
    {
        using var scale = v.ToScalar();
        return x.mul(scale).mul(_half).add(x, _half);
    }
}

/// <summary>Minimal IL reader: finds calls that create temporary TorchSharp Scalars.</summary>
internal static class ScalarIlScanner
{
    const BindingFlags All = BindingFlags.DeclaredOnly | BindingFlags.Public | BindingFlags.NonPublic |
                             BindingFlags.Instance | BindingFlags.Static;


    public static List<string> FindTemporaryScalars(Assembly assembly)
    {
        var offenders = new List<string>();
        foreach (var type in assembly.GetTypes())
        {
            var methods = type.GetMethods(All).Cast<MethodBase>().Concat(type.GetConstructors(All));
            foreach (var method in methods)
            {
                var findings = Scan(method);
                if (findings.Count > 0)
                    offenders.Add($"{type.FullName}::{method.Name} — {string.Join(", ", findings)}");
            }
        }
        return offenders;
    }

    /// <summary>
    /// Findings for one method body: "op_Implicit(Double)@IL_0012", "ToScalar not stored@IL_0030", or a call into a
    /// TorchSharp method that creates a temporary Scalar inside TorchSharp, e.g. <c>a + b</c> on two tensors
    /// ("Tensor.op_Addition > Tensor.add(Tensor)@IL_0040": TorchSharp passes an implicit <c>alpha: 1</c>), <c>x * 0.5</c>
    /// or <c>arange(n)</c>. Calls through virtual slots (a module's <c>forward</c>) resolve to the declared method only.
    /// </summary>
    public static List<string> Scan(MethodBase method)
    {
        var findings = new List<string>();
        var calls = Calls(method);
        for (int i = 0; i < calls.Count; i++)
        {
            var (offset, _, target) = calls[i];
            if (target is null) continue;
            if (target is MethodInfo { Name: "op_Implicit" } toTensor && toTensor.ReturnType == typeof(torch.Tensor) &&
                toTensor.GetParameters()[0].ParameterType == typeof(Scalar))
            {
                findings.Add($"Scalar passed where a Tensor is expected (TorchSharp throws 'Should not be called')@IL_{offset:X4}");
            }
            else if (IsScalarConversion(target, out var name))
            {
                if (name == "op_Implicit")
                    findings.Add($"op_Implicit({target.GetParameters()[0].ParameterType.Name})@IL_{offset:X4}");
                else if (!IsStore(i + 1 < calls.Count ? calls[i + 1].OpCode : OpCodes.Nop))
                    findings.Add($"ToScalar not stored@IL_{offset:X4}");
            }
            else if (target.Module.Assembly == TorchSharpAssembly && InsideTorchSharp(target, depth: 4) is { } chain)
            {
                findings.Add($"{chain}@IL_{offset:X4}");
            }
        }
        return findings;
    }

    static readonly Assembly TorchSharpAssembly = typeof(Scalar).Assembly;
    static readonly Dictionary<MethodBase, string> TorchSharpScalarMakers = new();
    static readonly object TorchSharpLock = new();

    static bool IsScalarConversion(MethodBase target, out string name)
    {
        name = target.Name;
        return target is MethodInfo info && info.ReturnType == typeof(Scalar) && name is "op_Implicit" or "ToScalar";
    }

    /// <summary>The call chain by which a TorchSharp method (or one it calls, up to depth levels) creates a Scalar.</summary>
    public static string? InsideTorchSharp(MethodBase method, int depth)
    {
        lock (TorchSharpLock) return InsideTorchSharpLocked(method, depth);
    }

    static string? InsideTorchSharpLocked(MethodBase method, int depth)
    {
        if (TorchSharpScalarMakers.TryGetValue(method, out var known)) return known;
        var calls = Calls(method);
        string self = $"{method.DeclaringType?.Name}.{method.Name}({string.Join(",", method.GetParameters().Select(p => p.ParameterType.Name))})";
        string? chain = calls.Any(c => c.Target is { } t && IsScalarConversion(t, out _)) ? self : null;
        if (chain is null && depth > 0)
        {
            foreach (var (_, _, target) in calls)
            {
                if (target is not null && target.Module.Assembly == TorchSharpAssembly && target != method &&
                    target.Name is not ("Dispose" or "Finalize") && InsideTorchSharpLocked(target, depth - 1) is { } inner)
                {
                    chain = $"{self} > {inner}";
                    break;
                }
            }
        }

        if (chain is not null) TorchSharpScalarMakers[method] = chain;
        return chain;
    }

    static bool IsStore(OpCode op) =>
        op == OpCodes.Stloc || op == OpCodes.Stloc_S || op == OpCodes.Stloc_0 || op == OpCodes.Stloc_1 ||
        op == OpCodes.Stloc_2 || op == OpCodes.Stloc_3 || op == OpCodes.Stfld || op == OpCodes.Stsfld;

    /// <summary>Every instruction of the body with its resolved method operand (null for non-call instructions).</summary>
    public static List<(int Offset, OpCode OpCode, MethodBase? Target)> Calls(MethodBase method)
    {
        var (typeArgs, methodArgs) = IlInstructions.GenericContext(method);
        var result = new List<(int, OpCode, MethodBase?)>();
        foreach (var (offset, opcode, token) in IlInstructions.Read(method))
        {
            MethodBase? target = null;
            if (opcode.OperandType == OperandType.InlineMethod)
            {
                try { target = method.Module.ResolveMethod(token, typeArgs, methodArgs); }
                // TorchSharp references optional assemblies (protobuf, SkiaSharp) that the tests do not load.
                catch (FileNotFoundException) when (method.Module.Assembly == TorchSharpAssembly) { }
            }
            result.Add((offset, opcode, target));
        }
        return result;
    }
}
