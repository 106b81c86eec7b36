using System.Reflection;
using System.Reflection.Emit;

namespace VisualChat.Tests;

/// <summary>A minimal IL reader for the tests that inspect the compiled product (Scalar lifetime, architecture).</summary>
internal static class IlInstructions
{
    static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    /// <summary>Every instruction of the method's body: its offset, opcode and 4-byte token operand (0 when it has none).
    /// Empty for methods without a readable body.</summary>
    public static List<(int Offset, OpCode OpCode, int Token)> Read(MethodBase method)
    {
        var result = new List<(int, OpCode, int)>();
        byte[]? il;
        try { il = method.GetMethodBody()?.GetILAsByteArray(); }
        catch (Exception e) when (e is BadImageFormatException or InvalidOperationException) { return result; }
        if (il is null) return result;
        int pos = 0;
        while (pos < il.Length)
        {
            int offset = pos;
            short value = il[pos++];
            if (value == 0xFE) value = unchecked((short)(0xFE00 | il[pos++]));
            var opcode = OpCodesByValue[value];
            bool hasToken = opcode.OperandType is OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType
                or OperandType.InlineTok or OperandType.InlineString or OperandType.InlineSig;
            int token = hasToken ? BitConverter.ToInt32(il, pos) : 0;
            pos += opcode.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, pos),
                _ => 4,
            };
            result.Add((offset, opcode, token));
        }
        return result;
    }

    /// <summary>Generic arguments to resolve the method's tokens with.</summary>
    public static (Type[]? TypeArgs, Type[]? MethodArgs) GenericContext(MethodBase method) =>
        (method.DeclaringType is { IsGenericType: true } t ? t.GetGenericArguments() : null,
         method is MethodInfo { IsGenericMethod: true } m ? m.GetGenericArguments() : null);
}
