using System.Buffers.Text;

namespace Dcache.Cache;

/// <summary>Integers in values, parsed and printed exactly as Redis does, so INCRBY accepts and rejects the same strings.</summary>
internal static class IntegerFormat
{
    /// <summary>Redis's string2ll: "-"? then digits, no leading zeros (except "0" itself), no "+", no spaces, no "-0", at most 20 bytes, within 64-bit range.</summary>
    public static bool TryParseStrict(ReadOnlySpan<byte> text, out long value)
    {
        value = 0;
        if (text.IsEmpty || text.Length > 20)
        {
            return false;
        }

        if (text.Length == 1 && text[0] == (byte)'0')
        {
            return true;
        }

        var negative = text[0] == (byte)'-';
        var digits = negative ? text[1..] : text;
        if (digits.IsEmpty || digits[0] < (byte)'1' || digits[0] > (byte)'9')
        {
            return false;
        }

        ulong magnitude = 0;
        foreach (var c in digits)
        {
            var digit = (uint)(c - (byte)'0');
            if (digit > 9 || magnitude > (ulong.MaxValue - digit) / 10)
            {
                return false;
            }

            magnitude = (magnitude * 10) + digit;
        }

        if (negative)
        {
            if (magnitude > (ulong)long.MaxValue + 1)
            {
                return false;
            }

            value = unchecked((long)(0UL - magnitude));
            return true;
        }

        if (magnitude > long.MaxValue)
        {
            return false;
        }

        value = (long)magnitude;
        return true;
    }

    /// <summary>The decimal text of <paramref name="value"/> as a new array (the stored value of an INCRBY result).</summary>
    public static byte[] Format(long value)
    {
        Span<byte> buffer = stackalloc byte[20];
        Utf8Formatter.TryFormat(value, buffer, out var written);
        return buffer[..written].ToArray();
    }
}
