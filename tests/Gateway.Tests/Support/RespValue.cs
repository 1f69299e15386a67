using System.Buffers;
using System.Globalization;
using System.Text;

namespace Dcache.Gateway.Tests.Support;

/// <summary>A reply as a test client reads it: RESP2 and RESP3 types.</summary>
internal sealed record RespValue(char Type, byte[]? Bytes = null, long Integer = 0, IReadOnlyList<RespValue>? Items = null)
{
    public string? Text => Bytes is null ? null : Encoding.Latin1.GetString(Bytes);

    public bool IsNull => Type == '_' || (Type is '$' or '*' && Bytes is null && Items is null);

    public bool IsError => Type == '-';

    /// <summary>Compact form for assertions: +OK, -ERR x, :1, $value, $nil, *[...], %{...}, >[...], _.</summary>
    public override string ToString() => Type switch
    {
        '+' or '-' => Type + Text,
        ':' => ":" + Integer.ToString(CultureInfo.InvariantCulture),
        '$' => Bytes is null ? "$nil" : "$" + Text,
        '=' => "=" + Text,
        '_' => "_",
        '*' when Items is null => "*nil",
        '%' => "%{" + string.Join(", ", Pairs(Items!)) + "}",
        _ => Type + "[" + string.Join(", ", Items!.Select(item => item.ToString())) + "]",
    };

    private static IEnumerable<string> Pairs(IReadOnlyList<RespValue> items)
    {
        for (var i = 0; i + 1 < items.Count; i += 2)
        {
            yield return items[i] + ": " + items[i + 1];
        }
    }

    /// <summary>Parses one reply from the front of the buffer; false when it is not complete yet.</summary>
    public static bool TryRead(ref ReadOnlySequence<byte> buffer, out RespValue? value)
    {
        var reader = new SequenceReader<byte>(buffer);
        if (!TryRead(ref reader, out value))
        {
            return false;
        }

        buffer = buffer.Slice(reader.Position);
        return true;
    }

    private static bool TryRead(ref SequenceReader<byte> reader, out RespValue? value)
    {
        value = null;
        if (!reader.TryRead(out var type) || !reader.TryReadTo(out ReadOnlySequence<byte> lineBytes, "\r\n"u8))
        {
            return false;
        }

        var line = Encoding.Latin1.GetString(lineBytes.ToArray());
        switch ((char)type)
        {
            case '+':
            case '-':
                value = new RespValue((char)type, Encoding.Latin1.GetBytes(line));
                return true;
            case ':':
                value = new RespValue(':', Integer: long.Parse(line, CultureInfo.InvariantCulture));
                return true;
            case '_':
                value = new RespValue('_');
                return true;
            case '$':
            case '=':
                var length = int.Parse(line, CultureInfo.InvariantCulture);
                if (length < 0)
                {
                    value = new RespValue('$');
                    return true;
                }

                if (reader.Remaining < length + 2)
                {
                    return false;
                }

                var bytes = new byte[length];
                reader.TryCopyTo(bytes);
                reader.Advance(length + 2);
                value = new RespValue((char)type, bytes);
                return true;
            case '*':
            case '%':
            case '>':
            case '~':
                var count = int.Parse(line, CultureInfo.InvariantCulture);
                if (count < 0)
                {
                    value = new RespValue('*');
                    return true;
                }

                var total = type == '%' ? count * 2 : count;
                var items = new List<RespValue>(total);
                for (var i = 0; i < total; i++)
                {
                    if (!TryRead(ref reader, out var item))
                    {
                        return false;
                    }

                    items.Add(item!);
                }

                value = new RespValue((char)type, Items: items);
                return true;
            default:
                throw new FormatException($"unexpected reply type '{(char)type}' in line {line}");
        }
    }
}
