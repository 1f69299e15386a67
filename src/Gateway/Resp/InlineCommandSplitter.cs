namespace Dcache.Gateway.Resp;

/// <summary>
/// Splits an inline command line ("SET k \"a b\"") into arguments exactly as Redis's sdssplitargs does: blanks
/// separate arguments; "double quotes" understand \xHH, \n, \r, \t, \b, \a and \c; 'single quotes' understand \';
/// a closing quote must be followed by a blank or the end of the line; a NUL byte ends the line.
/// </summary>
internal static class InlineCommandSplitter
{
    /// <summary>The request, null for a blank line; false when a quote is unbalanced.</summary>
    public static bool TrySplit(ReadOnlySpan<byte> line, out RespRequest? request)
    {
        request = null;
        var nul = line.IndexOf((byte)0);
        if (nul >= 0)
        {
            line = line[..nul];
        }

        // Unescaping never lengthens text, so the line's length bounds the arguments' bytes.
        var data = new byte[line.Length];
        var offsets = new List<int>();
        var written = 0;
        var end = line.Length;
        var p = 0;
        while (true)
        {
            while (p < end && IsSpace(line[p]))
            {
                p++;
            }

            if (p >= end)
            {
                break;
            }

            offsets.Add(written);
            var inDoubleQuotes = false;
            var inSingleQuotes = false;
            var done = false;
            while (!done)
            {
                if (inDoubleQuotes)
                {
                    if (p + 3 < end && line[p] == '\\' && line[p + 1] == 'x' && IsHexDigit(line[p + 2]) && IsHexDigit(line[p + 3]))
                    {
                        data[written++] = (byte)((HexValue(line[p + 2]) * 16) + HexValue(line[p + 3]));
                        p += 3;
                    }
                    else if (p + 1 < end && line[p] == '\\')
                    {
                        p++;
                        data[written++] = line[p] switch
                        {
                            (byte)'n' => (byte)'\n',
                            (byte)'r' => (byte)'\r',
                            (byte)'t' => (byte)'\t',
                            (byte)'b' => (byte)'\b',
                            (byte)'a' => (byte)'\a',
                            var other => other,
                        };
                    }
                    else if (p < end && line[p] == '"')
                    {
                        if (p + 1 < end && !IsSpace(line[p + 1]))
                        {
                            return false;
                        }

                        done = true;
                    }
                    else if (p >= end)
                    {
                        return false;
                    }
                    else
                    {
                        data[written++] = line[p];
                    }
                }
                else if (inSingleQuotes)
                {
                    if (p + 1 < end && line[p] == '\\' && line[p + 1] == '\'')
                    {
                        p++;
                        data[written++] = (byte)'\'';
                    }
                    else if (p < end && line[p] == '\'')
                    {
                        if (p + 1 < end && !IsSpace(line[p + 1]))
                        {
                            return false;
                        }

                        done = true;
                    }
                    else if (p >= end)
                    {
                        return false;
                    }
                    else
                    {
                        data[written++] = line[p];
                    }
                }
                else if (p >= end)
                {
                    done = true;
                }
                else
                {
                    switch (line[p])
                    {
                        case (byte)' ':
                        case (byte)'\n':
                        case (byte)'\r':
                        case (byte)'\t':
                            done = true;
                            break;
                        case (byte)'"':
                            inDoubleQuotes = true;
                            break;
                        case (byte)'\'':
                            inSingleQuotes = true;
                            break;
                        default:
                            data[written++] = line[p];
                            break;
                    }
                }

                if (p < end)
                {
                    p++;
                }
            }
        }

        if (offsets.Count == 0)
        {
            return true;
        }

        var offsetArray = new int[offsets.Count + 1];
        offsets.CopyTo(offsetArray);
        offsetArray[offsets.Count] = written;
        request = new RespRequest(data, offsetArray, offsets.Count);
        return true;
    }

    // C's isspace in the "C" locale.
    private static bool IsSpace(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\v' or (byte)'\f' or (byte)'\r';

    private static bool IsHexDigit(byte b) => b is >= (byte)'0' and <= (byte)'9' or >= (byte)'a' and <= (byte)'f' or >= (byte)'A' and <= (byte)'F';

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        _ => b - 'A' + 10,
    };
}
