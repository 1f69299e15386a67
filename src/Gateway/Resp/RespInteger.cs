using System.Buffers;

namespace Dcache.Gateway.Resp;

/// <summary>Integer parsing with Redis's exact rules (string2ll in util.c), used for lengths and command arguments.</summary>
public static class RespInteger
{
    /// <summary>The longest text string2ll accepts: "-9223372036854775808" is 20 bytes.</summary>
    public const int MaxLength = 20;

    /// <summary>
    /// Parses a signed 64-bit decimal the way Redis does: an optional '-', no '+', no spaces, no leading zeros
    /// (so "-0" and "007" are refused), no overflow.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> text, out long value)
    {
        value = 0;
        if (text.IsEmpty || text.Length > MaxLength)
        {
            return false;
        }

        if (text.Length == 1 && text[0] == (byte)'0')
        {
            return true;
        }

        var position = 0;
        var negative = false;
        if (text[0] == (byte)'-')
        {
            negative = true;
            position = 1;
            if (text.Length == 1)
            {
                return false;
            }
        }

        if (text[position] is < (byte)'1' or > (byte)'9')
        {
            return false;
        }

        ulong magnitude = 0;
        for (; position < text.Length; position++)
        {
            var digit = (uint)(text[position] - '0');
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

            value = (long)(0 - magnitude);
            return true;
        }

        if (magnitude > long.MaxValue)
        {
            return false;
        }

        value = (long)magnitude;
        return true;
    }

    /// <summary>Parses a short slice of a request buffer (a header's digits) without allocating.</summary>
    public static bool TryParse(in ReadOnlySequence<byte> text, out long value)
    {
        if (text.IsSingleSegment)
        {
            return TryParse(text.FirstSpan, out value);
        }

        value = 0;
        if (text.Length > MaxLength)
        {
            return false;
        }

        Span<byte> copy = stackalloc byte[MaxLength];
        text.CopyTo(copy);
        return TryParse(copy[..(int)text.Length], out value);
    }
}
