using System.Buffers;
using System.Buffers.Text;
using System.Text;

namespace Dcache.Gateway.Resp;

/// <summary>The RESP version a connection speaks: 2 until the client sends HELLO 3.</summary>
public enum RespProtocol : byte
{
    Resp2 = 2,
    Resp3 = 3,
}

/// <summary>
/// Writes RESP2/RESP3 replies straight into an <see cref="IBufferWriter{T}"/> (the connection's PipeWriter): no
/// intermediate buffers, no allocation for simple strings, errors, integers, bulk strings and aggregate headers.
/// </summary>
public static class RespWriter
{
    private const int MaxHeaderLength = 1 + RespInteger.MaxLength + 2;

    // Up to this size a bulk string is written with one GetSpan/Advance; larger values are copied in whatever
    // chunks the writer hands out rather than asking it for one huge contiguous block.
    private const int ContiguousBulkLimit = 4000;

    private static ReadOnlySpan<byte> Ok => "+OK\r\n"u8;
    private static ReadOnlySpan<byte> NullBulk2 => "$-1\r\n"u8;
    private static ReadOnlySpan<byte> NullArray2 => "*-1\r\n"u8;
    private static ReadOnlySpan<byte> Null3 => "_\r\n"u8;
    private static ReadOnlySpan<byte> NewLine => "\r\n"u8;
    private static ReadOnlySpan<byte> VerbatimTextPrefix => "txt:"u8;

    public static void WriteOk(IBufferWriter<byte> output) => output.Write(Ok);

    /// <summary>"+text\r\n". The text must not contain CR or LF (status replies are fixed words such as PONG).</summary>
    public static void WriteSimpleString(IBufferWriter<byte> output, ReadOnlySpan<byte> text)
    {
        var span = output.GetSpan(text.Length + 3);
        span[0] = (byte)'+';
        text.CopyTo(span[1..]);
        span[text.Length + 1] = (byte)'\r';
        span[text.Length + 2] = (byte)'\n';
        output.Advance(text.Length + 3);
    }

    /// <summary>
    /// "-message\r\n". CR and LF become spaces, as Redis does, so no text can break the framing. Text made only of
    /// characters up to U+00FF is written as Latin-1, which round-trips client bytes quoted in an error exactly;
    /// anything else is written as UTF-8.
    /// </summary>
    public static void WriteError(IBufferWriter<byte> output, string message)
    {
        // As Redis formats an error that quotes a client's bytes: CR and LF trimmed from the ends, spaces inside.
        message = message.Trim('\r', '\n');
        var useLatin1 = true;
        foreach (var character in message)
        {
            if (character > '\u00FF')
            {
                useLatin1 = false;
                break;
            }
        }

        var encoding = useLatin1 ? Encoding.Latin1 : Encoding.UTF8;
        var length = encoding.GetByteCount(message);
        var span = output.GetSpan(length + 3);
        span[0] = (byte)'-';
        var written = encoding.GetBytes(message, span[1..]);
        foreach (ref var b in span.Slice(1, written))
        {
            if (b is (byte)'\r' or (byte)'\n')
            {
                b = (byte)' ';
            }
        }

        span[written + 1] = (byte)'\r';
        span[written + 2] = (byte)'\n';
        output.Advance(written + 3);
    }

    public static void WriteInteger(IBufferWriter<byte> output, long value) => WriteHeader(output, (byte)':', value);

    /// <summary>"$length\r\nbytes\r\n", copying the value in as many chunks as the writer hands out.</summary>
    public static void WriteBulk(IBufferWriter<byte> output, ReadOnlySpan<byte> value)
    {
        if (value.Length <= ContiguousBulkLimit)
        {
            var span = output.GetSpan(MaxHeaderLength + value.Length + 2);
            // The common case: header, value and terminator in one span and one Advance.
            var headerLength = FormatHeader(span, (byte)'$', value.Length);
            value.CopyTo(span[headerLength..]);
            span[headerLength + value.Length] = (byte)'\r';
            span[headerLength + value.Length + 1] = (byte)'\n';
            output.Advance(headerLength + value.Length + 2);
            return;
        }

        WriteHeader(output, (byte)'$', value.Length);
        output.Write(value);
        output.Write(NewLine);
    }

    public static void WriteBulk(IBufferWriter<byte> output, string value)
    {
        var length = Encoding.UTF8.GetByteCount(value);
        WriteHeader(output, (byte)'$', length);
        var span = output.GetSpan(length + 2);
        Encoding.UTF8.GetBytes(value, span);
        span[length] = (byte)'\r';
        span[length + 1] = (byte)'\n';
        output.Advance(length + 2);
    }

    /// <summary>A null bulk string: "$-1" in RESP2, "_" in RESP3.</summary>
    public static void WriteNull(IBufferWriter<byte> output, RespProtocol protocol) =>
        output.Write(protocol == RespProtocol.Resp3 ? Null3 : NullBulk2);

    /// <summary>A null array: "*-1" in RESP2, "_" in RESP3.</summary>
    public static void WriteNullArray(IBufferWriter<byte> output, RespProtocol protocol) =>
        output.Write(protocol == RespProtocol.Resp3 ? Null3 : NullArray2);

    public static void WriteArrayHeader(IBufferWriter<byte> output, int count) => WriteHeader(output, (byte)'*', count);

    /// <summary>A map of <paramref name="pairs"/> entries: "%n" in RESP3, a flat array of 2n items in RESP2.</summary>
    public static void WriteMapHeader(IBufferWriter<byte> output, int pairs, RespProtocol protocol)
    {
        if (protocol == RespProtocol.Resp3)
        {
            WriteHeader(output, (byte)'%', pairs);
        }
        else
        {
            WriteHeader(output, (byte)'*', 2L * pairs);
        }
    }

    /// <summary>A set of <paramref name="count"/> members (COMMAND's flags): "~n" in RESP3, an ordinary array in RESP2.</summary>
    public static void WriteSetHeader(IBufferWriter<byte> output, int count, RespProtocol protocol) =>
        WriteHeader(output, protocol == RespProtocol.Resp3 ? (byte)'~' : (byte)'*', count);

    /// <summary>An out-of-band push (pub/sub messages): ">n" in RESP3, an ordinary array in RESP2.</summary>
    public static void WritePushHeader(IBufferWriter<byte> output, int count, RespProtocol protocol) =>
        WriteHeader(output, protocol == RespProtocol.Resp3 ? (byte)'>' : (byte)'*', count);

    /// <summary>Human-readable text (INFO, CLIENT INFO): a verbatim string "=n\r\ntxt:..." in RESP3, a bulk string in RESP2.</summary>
    public static void WriteVerbatimText(IBufferWriter<byte> output, ReadOnlySpan<byte> text, RespProtocol protocol)
    {
        if (protocol != RespProtocol.Resp3)
        {
            WriteBulk(output, text);
            return;
        }

        WriteHeader(output, (byte)'=', text.Length + VerbatimTextPrefix.Length);
        output.Write(VerbatimTextPrefix);
        output.Write(text);
        output.Write(NewLine);
    }

    private static void WriteHeader(IBufferWriter<byte> output, byte prefix, long value)
    {
        var span = output.GetSpan(MaxHeaderLength);
        output.Advance(FormatHeader(span, prefix, value));
    }

    private static int FormatHeader(Span<byte> span, byte prefix, long value)
    {
        span[0] = prefix;
        if (!Utf8Formatter.TryFormat(value, span[1..], out var digits))
        {
            throw new InvalidOperationException("a 64-bit integer always fits in a RESP header");
        }

        span[digits + 1] = (byte)'\r';
        span[digits + 2] = (byte)'\n';
        return digits + 3;
    }
}
