namespace Dcache.Gateway.Commands;

/// <summary>Redis's glob matching (stringmatchlen in util.c), case-insensitive, with its guard against exponential backtracking.</summary>
internal static class GlobPattern
{
    public static bool Matches(ReadOnlySpan<char> pattern, ReadOnlySpan<char> text)
    {
        var skipLongerMatches = false;
        return Match(pattern, text, ref skipLongerMatches);
    }

    private static bool Match(ReadOnlySpan<char> pattern, ReadOnlySpan<char> text, ref bool skipLongerMatches)
    {
        while (pattern.Length > 0 && text.Length > 0)
        {
            switch (pattern[0])
            {
                case '*':
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
                        if (Match(pattern[1..], text, ref skipLongerMatches))
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
                case '?':
                    text = text[1..];
                    break;
                case '[':
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
                            var start = char.ToLowerInvariant(pattern[0]);
                            var end = char.ToLowerInvariant(pattern[2]);
                            if (start > end)
                            {
                                (start, end) = (end, start);
                            }

                            var c = char.ToLowerInvariant(text[0]);
                            matched |= c >= start && c <= end;
                            pattern = pattern[2..];
                        }
                        else
                        {
                            matched |= char.ToLowerInvariant(pattern[0]) == char.ToLowerInvariant(text[0]);
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

                case '\\':
                    if (pattern.Length >= 2)
                    {
                        pattern = pattern[1..];
                    }

                    if (char.ToLowerInvariant(pattern[0]) != char.ToLowerInvariant(text[0]))
                    {
                        return false;
                    }

                    text = text[1..];
                    break;
                default:
                    if (char.ToLowerInvariant(pattern[0]) != char.ToLowerInvariant(text[0]))
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
}
