using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;

namespace Dcache.Cache;

/// <summary>
/// Writes a snapshot through one pooled buffer of <see cref="ChunkSize"/> bytes, hashing (SHA-256) each chunk as it goes
/// out, so a snapshot of any size costs a fixed amount of memory. Values larger than a chunk go straight to the stream.
/// </summary>
internal sealed class SnapshotSink : IDisposable
{
    public const int ChunkSize = 64 * 1024;

    private readonly Stream _output;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
    private int _used;

    public SnapshotSink(Stream output)
    {
        _output = output;
    }

    public void WriteByte(byte value)
    {
        Reserve(1)[0] = value;
        _used += 1;
    }

    public void WriteUInt64(ulong value)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(Reserve(8), value);
        _used += 8;
    }

    public void WriteInt64(long value) => WriteUInt64(unchecked((ulong)value));

    public void WriteVarUInt64(ulong value)
    {
        var span = Reserve(10);
        var i = 0;
        while (value >= 0x80)
        {
            span[i++] = (byte)(value | 0x80);
            value >>= 7;
        }

        span[i++] = (byte)value;
        _used += i;
    }

    public void WriteRaw(ReadOnlySpan<byte> data)
    {
        if (data.Length <= _buffer.Length - _used)
        {
            data.CopyTo(_buffer.AsSpan(_used));
            _used += data.Length;
            return;
        }

        Flush();
        if (data.Length >= _buffer.Length)
        {
            _hash.AppendData(data);
            _output.Write(data);
        }
        else
        {
            data.CopyTo(_buffer);
            _used = data.Length;
        }
    }

    public void WriteBytes(ReadOnlySpan<byte> data)
    {
        WriteVarUInt64((ulong)data.Length);
        WriteRaw(data);
    }

    /// <summary>Writes out what is buffered, then the SHA-256 of everything written before it (not itself hashed); returns that hash.</summary>
    public byte[] Finish()
    {
        Flush();
        var hash = _hash.GetHashAndReset();
        _output.Write(hash);
        _output.Flush();
        return hash;
    }

    public void Dispose()
    {
        _hash.Dispose();
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = [];
        }
    }

    private Span<byte> Reserve(int count)
    {
        if (_buffer.Length - _used < count)
        {
            Flush();
        }

        return _buffer.AsSpan(_used, count);
    }

    private void Flush()
    {
        if (_used == 0)
        {
            return;
        }

        var chunk = _buffer.AsSpan(0, _used);
        _hash.AppendData(chunk);
        _output.Write(chunk);
        _used = 0;
    }
}

/// <summary>
/// Reads what <see cref="SnapshotSink"/> wrote, chunk by chunk, hashing as it consumes so the trailer can be checked at the
/// end. Every shortfall or impossible value becomes an <see cref="InvalidDataException"/> that says what and where.
/// </summary>
internal sealed class SnapshotSource : IDisposable
{
    private readonly Stream _input;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(SnapshotSink.ChunkSize);
    private int _start;
    private int _end;
    private long _consumedBeforeBuffer;

    // Bytes not yet read from a seekable stream, measured once (asking a FileStream each time costs a system call);
    // for a stream that cannot tell, a bound that never binds.
    private long _unreadInStream = long.MaxValue;

    public SnapshotSource(Stream input)
    {
        _input = input;
        if (input.CanSeek)
        {
            _unreadInStream = input.Length - input.Position;
        }
    }

    /// <summary>Bytes consumed so far: the offset reported in errors.</summary>
    public long Position => _consumedBeforeBuffer + _start;

    public byte ReadByte(string field) => Take(1, field)[0];

    public ulong ReadUInt64(string field) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, field));

    public long ReadInt64(string field) => unchecked((long)ReadUInt64(field));

    public ulong ReadVarUInt64(string field)
    {
        var offset = Position;
        ulong value = 0;
        for (var shift = 0; shift < 70; shift += 7)
        {
            var b = ReadByte(field);
            if (shift == 63 && b > 1)
            {
                break;
            }

            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                return value;
            }
        }

        throw Corrupt($"{field} is not a valid varint", offset);
    }

    /// <summary>A count or length no larger than <paramref name="maximum"/>.</summary>
    public int ReadLength(string field, int maximum)
    {
        var offset = Position;
        var value = ReadVarUInt64(field);
        if (value > (ulong)maximum)
        {
            throw Corrupt(string.Create(CultureInfo.InvariantCulture, $"{field} {value} exceeds the limit of {maximum}"), offset);
        }

        // A seekable stream tells how much is left, which catches a corrupted length before it becomes a huge allocation.
        if ((long)value > _end - _start + _unreadInStream)
        {
            throw Corrupt(string.Create(CultureInfo.InvariantCulture, $"{field} {value} runs past the end of the snapshot"), offset);
        }

        return (int)value;
    }

    public byte[] ReadBytes(string field, int maximumLength)
    {
        var length = ReadLength(field + " length", maximumLength);
        if (length == 0)
        {
            return [];
        }

        var result = new byte[length];
        var fromBuffer = Math.Min(length, _end - _start);
        _buffer.AsSpan(_start, fromBuffer).CopyTo(result);
        _start += fromBuffer;
        if (fromBuffer < length)
        {
            // The rest does not pass through the buffer: hash what the buffer held, then read and hash the remainder directly.
            HashConsumedAndReset();
            var rest = result.AsSpan(fromBuffer);
            var read = _input.ReadAtLeast(rest, rest.Length, throwOnEndOfStream: false);
            _unreadInStream -= read;
            if (read < rest.Length)
            {
                throw Corrupt($"truncated inside {field}", Position + read);
            }

            _hash.AppendData(rest);
            _consumedBeforeBuffer += rest.Length;
        }

        return result;
    }

    /// <summary>Reads the trailer and checks it against the hash of everything before it; then requires the end of the stream.</summary>
    public byte[] VerifyTrailer()
    {
        HashConsumedAndReset();
        var expected = _hash.GetHashAndReset();
        var offset = Position;
        var actual = Take(expected.Length, "checksum trailer").ToArray();
        if (!CryptographicOperations.FixedTimeEquals(expected, actual))
        {
            throw Corrupt("checksum mismatch: the snapshot is corrupt", offset);
        }

        if (_start != _end || _input.ReadByte() != -1)
        {
            throw Corrupt("unexpected bytes after the checksum trailer", Position);
        }

        return expected;
    }

    public static InvalidDataException Corrupt(string what, long offset) =>
        new(string.Create(CultureInfo.InvariantCulture, $"Cache snapshot is corrupt or truncated: {what} (at byte {offset})."));

    public void Dispose()
    {
        _hash.Dispose();
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = [];
        }
    }

    private ReadOnlySpan<byte> Take(int count, string field)
    {
        if (_end - _start < count)
        {
            Refill(count, field);
        }

        var span = _buffer.AsSpan(_start, count);
        _start += count;
        return span;
    }

    private void Refill(int count, string field)
    {
        HashConsumedAndReset();
        while (_end < count)
        {
            var read = _input.Read(_buffer, _end, _buffer.Length - _end);
            _unreadInStream -= read;
            if (read == 0)
            {
                throw Corrupt($"truncated while reading {field}", Position + _end);
            }

            _end += read;
        }
    }

    /// <summary>Hashes the bytes consumed from the buffer and drops them, keeping any unconsumed remainder at the front.</summary>
    private void HashConsumedAndReset()
    {
        if (_start == 0)
        {
            return;
        }

        _hash.AppendData(_buffer, 0, _start);
        var kept = _end - _start;
        _buffer.AsSpan(_start, kept).CopyTo(_buffer);
        _consumedBeforeBuffer += _start;
        _start = 0;
        _end = kept;
    }
}
