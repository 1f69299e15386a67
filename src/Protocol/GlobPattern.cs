namespace Dcache.Protocol;

/// <summary>
/// Redis's glob matching over bytes (stringmatchlen in util.c), with its guard against exponential backtracking: the
/// gateway's CONFIG GET matches without case (as Redis does), the nodes' KEYS with case. Shared so both match alike.
/// </summary>
public static class GlobPattern
{
    /// <summary>
    /// How many stars deep a match may recurse before it is taken as no match, as Redis (7.2 on) bounds it: a pattern of
    /// a hundred thousand stars against a long key would otherwise overflow the stack, which ends the process.
    /// </summary>
    public const int MaxNesting = 1000;

    public static bool Matches(ReadOnlySpan<byte> pattern, ReadOnlySpan<byte> text, bool ignoreCase)
    {
        var skipLongerMatches = false;
        return Match(pattern, text, ignoreCase, ref skipLongerMatches, nesting: 0);
    }

    private static bool Match(ReadOnlySpan<byte> pattern, ReadOnlySpan<byte> text, bool ignoreCase, ref bool skipLongerMatches, int nesting)
    {
        if (nesting > MaxNesting)
        {
            return false;
        }

        while (pattern.Length > 0 && text.Length > 0)
        {
            switch (pattern[0])
            {
                case (byte)'*':
                    while (pattern.Length > 1 && pattern[1] == '*')
                    {
                        pattern = pattern[1..];
                    }

                    if (pattern.Length == 1)
                    {
                        return true;
                    }

                    while (text.Length > 0)
                    {
                        if (Match(pattern[1..], text, ignoreCase, ref skipLongerMatches, nesting + 1))
                        {
                            return true;
                        }

                        if (skipLongerMatches)
                        {
                            return false;
                        }

                        text = text[1..];
                    }

                    // No longer text can match what follows this star either: stop the outer stars from trying.
                    skipLongerMatches = true;
                    return false;
                case (byte)'?':
                    text = text[1..];
                    break;
                case (byte)'[':
                {
                    pattern = pattern[1..];
                    var negate = pattern.Length > 0 && pattern[0] == '^';
                    if (negate)
                    {
                        pattern = pattern[1..];
                    }

                    var matched = false;
                    while (true)
                    {
                        if (pattern.Length >= 2 && pattern[0] == '\\')
                        {
                            pattern = pattern[1..];
                            matched |= pattern[0] == text[0];
                        }
                        else if (pattern.Length == 0)
                        {
                            // An unterminated class: Redis steps back so the final advance lands on the end.
                            break;
                        }
                        else if (pattern[0] == ']')
                        {
                            break;
                        }
                        else if (pattern.Length >= 3 && pattern[1] == '-')
                        {
                            var start = Fold(pattern[0], ignoreCase);
                            var end = Fold(pattern[2], ignoreCase);
                            if (start > end)
                            {
                                (start, end) = (end, start);
                            }

                            var c = Fold(text[0], ignoreCase);
                            matched |= c >= start && c <= end;
                            pattern = pattern[2..];
                        }
                        else
                        {
                            matched |= Fold(pattern[0], ignoreCase) == Fold(text[0], ignoreCase);
                        }

                        pattern = pattern[1..];
                    }

                    if (negate)
                    {
                        matched = !matched;
                    }

                    if (!matched)
                    {
                        return false;
                    }

                    text = text[1..];
                    if (pattern.Length == 0)
                    {
                        return text.Length == 0;
                    }

                    break;
                }

                case (byte)'\\':
                    if (pattern.Length >= 2)
                    {
                        pattern = pattern[1..];
                    }

                    if (Fold(pattern[0], ignoreCase) != Fold(text[0], ignoreCase))
                    {
                        return false;
                    }

                    text = text[1..];
                    break;
                default:
                    if (Fold(pattern[0], ignoreCase) != Fold(text[0], ignoreCase))
                    {
                        return false;
                    }

                    text = text[1..];
                    break;
            }

            pattern = pattern[1..];
            if (text.Length == 0)
            {
                while (pattern.Length > 0 && pattern[0] == '*')
                {
                    pattern = pattern[1..];
                }

                break;
            }
        }

        return pattern.Length == 0 && text.Length == 0;
    }

    // C's tolower in the "C" locale, which is what Redis uses: ASCII letters only.
    private static byte Fold(byte c, bool ignoreCase) => ignoreCase && c is >= (byte)'A' and <= (byte)'Z' ? (byte)(c + 32) : c;
}
