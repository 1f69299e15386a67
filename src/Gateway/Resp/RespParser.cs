using System.Buffers;
using System.Globalization;

namespace Dcache.Gateway.Resp;

public enum RespParseStatus
{
    /// <summary>A request was parsed (and its bytes consumed).</summary>
    Request,

    /// <summary>More bytes are needed; whatever could be used was consumed.</summary>
    Incomplete,

    /// <summary>The input is not RESP: reply <see cref="RespParser.Error"/> and close the connection.</summary>
    ProtocolError,
}

/// <summary>
/// Incremental RESP2 request parser for one connection: multibulk requests ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") and
/// inline commands ("GET k\r\n"). Errors carry Redis's wording.
/// </summary>
/// <remarks>
/// Memory: nothing is allocated from a declared length. A request that is entirely in the buffer is copied once into
/// an exactly sized array. A request still arriving is consumed argument by argument (and a large argument chunk by
/// chunk) into a buffer that grows by doubling with the bytes that actually arrived, so the transport's buffer never
/// has to hold a whole large request and a "$2000000000" header costs nothing until the data comes. Argument slots
/// start at <see cref="InitialArgumentSlots"/> however many a "*" header announces.
/// </remarks>
public sealed class RespParser
{
    internal const int InitialArgumentSlots = 16;

    // Redis refuses larger headers from clients that still have to authenticate (processMultibulkBuffer).
    private const int UnauthenticatedMaxArguments = 10;
    private const int UnauthenticatedMaxBulkLength = 16 * 1024;

    private readonly RespOptions _options;

    // Arguments still expected by the multibulk request being received; 0 between requests.
    private int _argumentsRemaining;

    // Declared length of the argument whose data is arriving; -1 while its "$" header is awaited.
    private long _bulkLength = -1;

    private RequestBuilder? _builder;

    // Bytes at the start of the buffer already searched for a line terminator without finding one: a slow drip of a
    // header or inline line is then scanned once in total, not once per arriving byte.
    private long _scannedWithoutTerminator;

    public RespParser(RespOptions options)
    {
        _options = options;
    }

    /// <summary>Apply Redis's tighter limits for connections that have not authenticated yet (10 arguments, 16 KiB bulks).</summary>
    public bool AuthenticationRequired { get; set; }

    /// <summary>The error to reply after <see cref="RespParseStatus.ProtocolError"/>, e.g. "ERR Protocol error: invalid bulk length".</summary>
    public string? Error { get; private set; }

    /// <summary>True while part of a request has been consumed (a request is half received).</summary>
    public bool HasPartialRequest => _argumentsRemaining > 0;

    /// <summary>Bytes held for the partly received request (for memory accounting and tests).</summary>
    public long BufferedBytes => _builder?.Capacity ?? 0;

    /// <summary>
    /// Parses the next request from <paramref name="buffer"/>, which starts at the first unconsumed byte. On return the
    /// buffer has been sliced past everything consumed: the caller advances its pipe to buffer.Start and, after
    /// <see cref="RespParseStatus.Incomplete"/>, marks buffer.End examined.
    /// </summary>
    public RespParseStatus TryParse(ref ReadOnlySequence<byte> buffer, out RespRequest? request)
    {
        request = null;
        if (Error is not null)
        {
            return RespParseStatus.ProtocolError;
        }

        while (true)
        {
            if (_argumentsRemaining > 0)
            {
                return ContinueMultibulk(ref buffer, out request);
            }

            if (buffer.IsEmpty)
            {
                return RespParseStatus.Incomplete;
            }

            if (buffer.FirstSpan[0] != (byte)'*')
            {
                var inline = ParseInline(ref buffer, out request);
                if (inline == RespParseStatus.Request && request is null)
                {
                    // A blank line: Redis skips it without a reply.
                    continue;
                }

                return inline;
            }

            var header = ParseMultibulkHeader(ref buffer, out var count);
            if (header != RespParseStatus.Request)
            {
                return header;
            }

            if (count <= 0)
            {
                // "*0" and "*-1" are empty requests: Redis skips them without a reply.
                continue;
            }

            if (TryTakeWholeRequest(ref buffer, count, out request))
            {
                return RespParseStatus.Request;
            }

            _argumentsRemaining = (int)count;
            _bulkLength = -1;
            _builder = new RequestBuilder(count, initialCapacity: Math.Min(buffer.Length, _options.MaxRequestBytes));
        }
    }

    private RespParseStatus ParseInline(ref ReadOnlySequence<byte> buffer, out RespRequest? request)
    {
        request = null;
        if (!TryFindTerminator(buffer, (byte)'\n', out var newline))
        {
            return buffer.Length > _options.MaxInlineLength
                ? Fail("ERR Protocol error: too big inline request")
                : RespParseStatus.Incomplete;
        }

        var lineLength = newline;
        if (lineLength > 0 && buffer.Slice(lineLength - 1, 1).FirstSpan[0] == (byte)'\r')
        {
            lineLength--;
        }

        if (lineLength > _options.MaxInlineLength)
        {
            // Whether its newline came in the same read or later: a long line is refused either way, as Redis does.
            return Fail("ERR Protocol error: too big inline request");
        }

        var line = buffer.Slice(0, lineLength);
        buffer = buffer.Slice(newline + 1);
        _scannedWithoutTerminator = 0;

        bool balanced;
        if (line.IsSingleSegment)
        {
            balanced = InlineCommandSplitter.TrySplit(line.FirstSpan, out request);
        }
        else
        {
            var copy = ArrayPool<byte>.Shared.Rent((int)line.Length);
            try
            {
                line.CopyTo(copy);
                balanced = InlineCommandSplitter.TrySplit(copy.AsSpan(0, (int)line.Length), out request);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(copy);
            }
        }

        if (!balanced)
        {
            return Fail("ERR Protocol error: unbalanced quotes in request");
        }

        // The limits a multibulk header is held to (an empty line gives no request).
        if (request is null)
        {
            return RespParseStatus.Request;
        }

        if (request.Count > _options.MaxArguments)
        {
            request = null;
            return Fail("ERR Protocol error: invalid multibulk length");
        }

        // No unauthenticated argument limit here: Redis holds only multibulk requests to it, and answers an inline
        // command before AUTH with NOAUTH (the line itself is held to MaxInlineLength).
        return RespParseStatus.Request;
    }

    private RespParseStatus ParseMultibulkHeader(ref ReadOnlySequence<byte> buffer, out long count)
    {
        count = 0;
        if (!TryFindLine(buffer, out var carriageReturn))
        {
            return buffer.Length > _options.MaxInlineLength
                ? Fail("ERR Protocol error: too big mbulk count string")
                : RespParseStatus.Incomplete;
        }

        if (!RespInteger.TryParse(buffer.Slice(1, carriageReturn - 1), out count) || count > int.MaxValue || count > _options.MaxArguments)
        {
            return Fail("ERR Protocol error: invalid multibulk length");
        }

        if (count > UnauthenticatedMaxArguments && AuthenticationRequired)
        {
            return Fail("ERR Protocol error: unauthenticated multibulk length");
        }

        buffer = buffer.Slice(carriageReturn + 2);
        _scannedWithoutTerminator = 0;
        return RespParseStatus.Request;
    }

    /// <summary>
    /// The fast path: when the whole request is already buffered, measure it, then copy every argument once into one
    /// exactly sized array. Returns false (consuming nothing) when the request is incomplete or malformed; the
    /// incremental path then takes over and reports any error at the right argument.
    /// </summary>
    private bool TryTakeWholeRequest(ref ReadOnlySequence<byte> buffer, long count, out RespRequest? request)
    {
        request = null;
        var reader = new SequenceReader<byte>(buffer);
        long total = 0;
        for (var i = 0; i < count; i++)
        {
            if (ReadBulkHeader(ref reader, out var length) != HeaderStatus.Read || reader.Remaining < length + 2)
            {
                return false;
            }

            total += length;
            if (total > _options.MaxRequestBytes)
            {
                return false;
            }

            reader.Advance(length + 2);
        }

        var data = new byte[total];
        var offsets = new int[count + 1];
        reader = new SequenceReader<byte>(buffer);
        var position = 0;
        for (var i = 0; i < count; i++)
        {
            ReadBulkHeader(ref reader, out var length);
            offsets[i] = position;
            reader.TryCopyTo(data.AsSpan(position, (int)length));
            position += (int)length;
            reader.Advance(length + 2);
        }

        offsets[count] = position;
        buffer = buffer.Slice(reader.Position);
        request = new RespRequest(data, offsets, (int)count);
        return true;
    }

    private RespParseStatus ContinueMultibulk(ref ReadOnlySequence<byte> buffer, out RespRequest? request)
    {
        request = null;
        var builder = _builder!;
        while (_argumentsRemaining > 0)
        {
            if (_bulkLength < 0)
            {
                if (buffer.IsEmpty)
                {
                    return RespParseStatus.Incomplete;
                }

                var first = buffer.FirstSpan[0];
                if (first != (byte)'$')
                {
                    return Fail(string.Create(CultureInfo.InvariantCulture, $"ERR Protocol error: expected '$', got '{(char)first}'"));
                }

                if (!TryFindLine(buffer, out var carriageReturn))
                {
                    return buffer.Length > _options.MaxInlineLength
                        ? Fail("ERR Protocol error: too big bulk count string")
                        : RespParseStatus.Incomplete;
                }

                if (!RespInteger.TryParse(buffer.Slice(1, carriageReturn - 1), out var length) || length < 0 || length > _options.MaxBulkLength)
                {
                    return Fail("ERR Protocol error: invalid bulk length");
                }

                if (length > UnauthenticatedMaxBulkLength && AuthenticationRequired)
                {
                    return Fail("ERR Protocol error: unauthenticated bulk length");
                }

                if (builder.Length + length > _options.MaxRequestBytes)
                {
                    return Fail("ERR Protocol error: request exceeds the query buffer limit");
                }

                buffer = buffer.Slice(carriageReturn + 2);
                _scannedWithoutTerminator = 0;
                _bulkLength = length;
                builder.BeginArgument();
            }

            var missing = _bulkLength - builder.CurrentArgumentLength;
            if (missing > 0)
            {
                var available = Math.Min(missing, buffer.Length);
                builder.Append(buffer.Slice(0, available), _options.MaxRequestBytes);
                buffer = buffer.Slice(available);
                if (available < missing)
                {
                    return RespParseStatus.Incomplete;
                }
            }

            // Like Redis, skip the two bytes after the data without checking that they are CRLF.
            if (buffer.Length < 2)
            {
                return RespParseStatus.Incomplete;
            }

            buffer = buffer.Slice(2);
            builder.EndArgument();
            _bulkLength = -1;
            _argumentsRemaining--;
        }

        request = builder.Build();
        _builder = null;
        return RespParseStatus.Request;
    }

    private enum HeaderStatus
    {
        Read,
        Incomplete,
        Invalid,
    }

    private HeaderStatus ReadBulkHeader(ref SequenceReader<byte> reader, out long length)
    {
        length = 0;
        if (!reader.TryPeek(out var first) || first != (byte)'$')
        {
            return reader.End ? HeaderStatus.Incomplete : HeaderStatus.Invalid;
        }

        var start = reader.Position;
        if (!reader.TryAdvanceTo((byte)'\r', advancePastDelimiter: false))
        {
            return HeaderStatus.Incomplete;
        }

        var digits = reader.Sequence.Slice(reader.Sequence.GetPosition(1, start), reader.Position);
        if (reader.Remaining < 2)
        {
            return HeaderStatus.Incomplete;
        }

        reader.Advance(2);
        if (!RespInteger.TryParse(digits, out length) || length < 0 || length > _options.MaxBulkLength
            || (length > UnauthenticatedMaxBulkLength && AuthenticationRequired))
        {
            return HeaderStatus.Invalid;
        }

        return HeaderStatus.Read;
    }

    /// <summary>Finds the '\r' ending a header line that is followed by at least one more byte (its '\n', unchecked as in Redis).</summary>
    private bool TryFindLine(in ReadOnlySequence<byte> buffer, out long carriageReturn)
    {
        if (!TryFindTerminator(buffer, (byte)'\r', out carriageReturn))
        {
            return false;
        }

        if (buffer.Length < carriageReturn + 2)
        {
            // The '\r' is here but not the '\n': next time, search from the '\r' again.
            _scannedWithoutTerminator = carriageReturn;
            return false;
        }

        return true;
    }

    private bool TryFindTerminator(in ReadOnlySequence<byte> buffer, byte terminator, out long index)
    {
        var reader = new SequenceReader<byte>(buffer);
        reader.Advance(Math.Min(_scannedWithoutTerminator, buffer.Length));
        if (reader.TryAdvanceTo(terminator, advancePastDelimiter: false))
        {
            index = reader.Consumed;
            return true;
        }

        _scannedWithoutTerminator = buffer.Length;
        index = -1;
        return false;
    }

    private RespParseStatus Fail(string error)
    {
        Error = error;
        _builder = null;
        return RespParseStatus.ProtocolError;
    }

    /// <summary>Accumulates the arguments of a request that arrives over several reads.</summary>
    private sealed class RequestBuilder
    {
        private byte[] _data;
        private int[] _offsets;
        private int _count;
        private readonly long _expectedArguments;

        public RequestBuilder(long expectedArguments, long initialCapacity)
        {
            _expectedArguments = expectedArguments;
            _data = new byte[(int)Math.Max(16L, initialCapacity)];
            _offsets = new int[Math.Min(expectedArguments, InitialArgumentSlots) + 1];
        }

        public int Length { get; private set; }

        public long Capacity => _data.Length + ((long)_offsets.Length * sizeof(int));

        public int CurrentArgumentLength => Length - _offsets[_count];

        public void BeginArgument()
        {
            if (_count + 1 >= _offsets.Length)
            {
                // Double the slots, never past what the header announced.
                var slots = (int)Math.Min(_expectedArguments + 1, (long)_offsets.Length * 2);
                Array.Resize(ref _offsets, slots);
            }

            _offsets[_count] = Length;
        }

        public void Append(in ReadOnlySequence<byte> bytes, long maxRequestBytes)
        {
            var required = Length + bytes.Length;
            if (required > _data.Length)
            {
                // Doubling keeps copying amortised; the capacity stays within twice the bytes that arrived.
                var capacity = Math.Max(required, Math.Min((long)_data.Length * 2, Math.Min(maxRequestBytes, Array.MaxLength)));
                Array.Resize(ref _data, (int)capacity);
            }

            bytes.CopyTo(_data.AsSpan(Length));
            Length = (int)required;
        }

        public void EndArgument()
        {
            _count++;
            _offsets[_count] = Length;
        }

        public RespRequest Build() => new(_data, _offsets, _count);
    }
}
