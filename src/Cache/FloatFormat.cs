using System.Globalization;
using System.Text;

namespace Dcache.Cache;

/// <summary>
/// INCRBYFLOAT's numbers: which strings are floats (Redis's string2ld rules), how two of them add up, and how the sum is
/// written back. Everything here is managed code with no dependence on the platform's floating point unit or culture,
/// so every replica computes the same bytes.
/// </summary>
internal static class FloatFormat
{
    // Redis's MAX_LONG_DOUBLE_CHARS: longer strings are not floats.
    private const int MaxLength = 5 * 1024;

    // Redis prints the sum with "%.17Lf": at most 17 digits after the point.
    private const int MaxDecimals = 17;

    // The most a double's shortest round-trip form has; decimal sums are cut to the same.
    private const int MaxSignificantDigits = 17;

    private const NumberStyles Style = NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent;

    /// <summary>
    /// What every replica, of every build, reads as a float when it applies INCRBYFLOAT: a decimal number (sign, point
    /// and exponent allowed; "inf" and "infinity" too) with nothing before or after it, not NaN. Redis's string2ld
    /// also refuses a NUL byte and numbers a long double cannot hold (<see cref="IsRedisFloat"/>); those stricter rules
    /// apply only to increments, where the proposer checks them, because applying an entry differently from older
    /// builds would let replicas of a cluster being upgraded diverge (docs/protocol.md lists what remains different).
    /// Where Redis reads 80-bit long doubles this reads doubles, so numbers beyond ±1.8e308 read as infinite (and then
    /// fail as an infinite result).
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> text, out double value)
    {
        value = 0;
        if (text.IsEmpty || text.Length >= MaxLength || !Ascii.IsValid(text))
        {
            return false;
        }

        Span<char> chars = stackalloc char[text.Length];
        Ascii.ToUtf16(text, chars, out _);
        var unsigned = chars[0] is '+' or '-' ? chars[1..] : chars;
        if (unsigned.Equals("inf", StringComparison.OrdinalIgnoreCase))
        {
            value = chars[0] == '-' ? double.NegativeInfinity : double.PositiveInfinity;
            return true;
        }

        return double.TryParse(chars, Style, CultureInfo.InvariantCulture, out value) && !double.IsNaN(value);
    }

    /// <summary>
    /// Redis's string2ld, as far as a double can follow it: <see cref="TryParse"/>, and no NUL byte (.NET's parsers take
    /// trailing NULs for the end of the text, so "1\0" would read as 1, where strtold must read every byte), and not so
    /// large or so small that a long double would overflow or round to zero ("1e5000", "1e-5000"). The proposer checks
    /// an INCRBYFLOAT increment with this before the command enters the log.
    /// </summary>
    public static bool IsRedisFloat(ReadOnlySpan<byte> text)
    {
        if (!TryParse(text, out var value) || text.Contains((byte)0))
        {
            return false;
        }

        Span<char> chars = stackalloc char[text.Length];
        Ascii.ToUtf16(text, chars, out _);
        var unsigned = chars[0] is '+' or '-' ? chars[1..] : chars;
        return double.IsFinite(value) && value != 0 || !char.IsAsciiDigit(unsigned[0]) && unsigned[0] != '.' || WithinLongDoubleRange(unsigned);
    }

    // LDBL_MAX (1.18973149535723176502e4932) and half the smallest subnormal long double (1.82259976594123730126e-4951,
    // below which strtold rounds to zero), as leading significant digits and a power of ten.
    private const string LongDoubleMaxDigits = "118973149535723176502126385303";
    private const int LongDoubleMaxExponent = 4932;
    private const string LongDoubleHalfMinDigits = "182259976594123730126420296681";
    private const int LongDoubleHalfMinExponent = -4951;

    /// <summary>
    /// A number that reads as an infinite or zero double: false when strtold would also overflow or underflow to zero
    /// (string2ld refuses those: ERANGE), as for "1e5000" and "1e-5000". Between ±1.8e308 and ±1.19e4932 a long double
    /// is finite where a double is not: that stays the documented difference.
    /// </summary>
    private static bool WithinLongDoubleRange(ReadOnlySpan<char> number)
    {
        var e = number.IndexOfAny('e', 'E');
        var mantissa = e < 0 ? number : number[..e];
        long exponent = 0;
        if (e >= 0)
        {
            var exponentText = number[(e + 1)..];
            var negative = exponentText[0] == '-';
            foreach (var c in exponentText[(exponentText[0] is '+' or '-' ? 1 : 0)..])
            {
                // Saturates: any exponent beyond a billion is far outside every range here.
                exponent = Math.Min((exponent * 10) + (c - '0'), 1_000_000_000);
            }

            exponent = negative ? -exponent : exponent;
        }

        var point = mantissa.IndexOf('.');
        var integerDigits = point < 0 ? mantissa.Length : point;
        var digits = point < 0 ? mantissa.ToString() : string.Concat(mantissa[..point], mantissa[(point + 1)..]);
        var first = digits.AsSpan().IndexOfAnyExcept('0');
        if (first < 0)
        {
            return true; // zero itself: no underflow
        }

        // The number is 0.<significant> x 10^(power + 1), i.e. d.ddd x 10^power.
        var power = integerDigits - first - 1 + exponent;
        var significant = digits[first..].TrimEnd('0');
        if (power > LongDoubleMaxExponent || (power == LongDoubleMaxExponent && CompareDigits(significant, LongDoubleMaxDigits) >= 0))
        {
            return false;
        }

        return power > LongDoubleHalfMinExponent || (power == LongDoubleHalfMinExponent && CompareDigits(significant, LongDoubleHalfMinDigits) > 0);
    }

    private static int CompareDigits(string a, string b)
    {
        var length = Math.Max(a.Length, b.Length);
        return string.CompareOrdinal(a.PadRight(length, '0'), b.PadRight(length, '0'));
    }

    /// <summary>
    /// <paramref name="current"/> + <paramref name="increment"/> (both valid for <see cref="TryParse"/>) as the text to
    /// store, or null when the sum is NaN or infinite. Sums that System.Decimal holds (28 digits, up to ±7.9e28) are
    /// exact in decimal, so 0.1 + 0.2 gives "0.3" as Redis's long double arithmetic does; others are added as doubles and
    /// written as the shortest decimal that reads back as the same double. Either way: no exponent, at most 17
    /// significant digits and at most 17 digits after the point, no trailing zeros.
    /// </summary>
    public static byte[]? Add(ReadOnlySpan<byte> current, ReadOnlySpan<byte> increment)
    {
        if (TryParseDecimal(current, out var a) && TryParseDecimal(increment, out var b))
        {
            try
            {
                return Encoding.ASCII.GetBytes(Trim(RoundToPrecision(a + b).ToString(CultureInfo.InvariantCulture)));
            }
            catch (OverflowException)
            {
                // Outside decimal's range: the double path below decides.
            }
        }

        if (!TryParse(current, out var x) || !TryParse(increment, out var y))
        {
            throw new ArgumentException("Both operands must be floats.");
        }

        var sum = x + y;
        return double.IsFinite(sum) ? Encoding.ASCII.GetBytes(Format(sum)) : null;
    }

    /// <summary>A finite double without exponent: its shortest round-trip digits, rounded to 17 decimals.</summary>
    internal static string Format(double value)
    {
        var shortest = value.ToString("R", CultureInfo.InvariantCulture);
        var negative = shortest[0] == '-';
        var mantissa = negative ? shortest[1..] : shortest;
        var exponent = 0;
        var e = mantissa.IndexOf('E', StringComparison.Ordinal);
        if (e >= 0)
        {
            exponent = int.Parse(mantissa[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            mantissa = mantissa[..e];
        }

        var point = mantissa.IndexOf('.', StringComparison.Ordinal);
        var digits = point < 0 ? mantissa : mantissa.Remove(point, 1);
        var integerDigits = (point < 0 ? mantissa.Length : point) + exponent;

        // Pad so that there is at least one integer digit and the digits reach the point.
        if (integerDigits <= 0)
        {
            digits = new string('0', 1 - integerDigits) + digits;
            integerDigits = 1;
        }
        else if (integerDigits > digits.Length)
        {
            digits += new string('0', integerDigits - digits.Length);
        }

        if (digits.Length - integerDigits > MaxDecimals)
        {
            digits = RoundHalfUp(digits, integerDigits + MaxDecimals, ref integerDigits);
        }

        var text = (negative ? "-" : "") + digits[..integerDigits].TrimStart('0').PadLeft(1, '0') + (digits.Length > integerDigits ? "." + digits[integerDigits..] : "");
        return Trim(text);
    }

    /// <summary>
    /// At most 17 significant digits (what a double carries, and about what Redis's long double shows) and at most 17
    /// decimals (Redis's "%.17Lf"), rounding half to even. Decimal arithmetic is exact here: scaling by ten only moves
    /// the point.
    /// </summary>
    private static decimal RoundToPrecision(decimal value)
    {
        var magnitude = Math.Abs(value);
        var integerDigits = magnitude >= 1 ? decimal.Truncate(magnitude).ToString(CultureInfo.InvariantCulture).Length : 0;
        if (integerDigits <= MaxSignificantDigits)
        {
            return Math.Round(value, Math.Min(MaxDecimals, MaxSignificantDigits - integerDigits), MidpointRounding.ToEven);
        }

        var scale = 1m;
        for (var i = MaxSignificantDigits; i < integerDigits; i++)
        {
            scale *= 10;
        }

        return Math.Round(value / scale, 0, MidpointRounding.ToEven) * scale;
    }

    private static bool TryParseDecimal(ReadOnlySpan<byte> text, out decimal value)
    {
        Span<char> chars = stackalloc char[text.Length];
        Ascii.ToUtf16(text, chars, out _);
        return decimal.TryParse(chars, Style, CultureInfo.InvariantCulture, out value);
    }

    /// <summary>Keeps the first <paramref name="keep"/> digits, rounding half up; a carry out of the first digit adds one.</summary>
    private static string RoundHalfUp(string digits, int keep, ref int integerDigits)
    {
        var kept = digits[..keep].ToCharArray();
        if (digits[keep] >= '5')
        {
            var i = keep - 1;
            while (i >= 0 && kept[i] == '9')
            {
                kept[i--] = '0';
            }

            if (i < 0)
            {
                integerDigits++;
                return "1" + new string(kept);
            }

            kept[i]++;
        }

        return new string(kept);
    }

    /// <summary>Drops trailing zeros after the point (and the point itself), and turns "-0" into "0", as Redis's ld2string does.</summary>
    private static string Trim(string text)
    {
        if (text.Contains('.', StringComparison.Ordinal))
        {
            text = text.TrimEnd('0').TrimEnd('.');
        }

        return text == "-0" ? "0" : text;
    }
}
