using System.Buffers.Binary;
using System.Globalization;

namespace Dcache.Cache;

/// <summary>
/// A forward-only reader over an encoded command entry. Every read checks the remaining length first, so malformed
/// input surfaces as a <see cref="FormatException"/> that names the field and offset, never as an index or overflow exception.
/// </summary>
internal ref struct EntryReader
{
    private readonly ReadOnlySpan<byte> _data;
    private int _position;

    public EntryReader(ReadOnlySpan<byte> data)
    {
        _data = data;
        _position = 0;
    }

    public readonly int Position => _position;

    public readonly int Remaining => _data.Length - _position;

    // The optional fieldSuffix names a part of the field (" length") without concatenating a string on every read:
    // the name is only put together for an error message.
    public byte ReadByte(string field, string fieldSuffix = "")
    {
        Require(1, field, fieldSuffix);
        return _data[_position++];
    }

    public ulong ReadUInt64(string field)
    {
        Require(8, field);
        var value = BinaryPrimitives.ReadUInt64LittleEndian(_data.Slice(_position, 8));
        _position += 8;
        return value;
    }

    public long ReadInt64(string field) => unchecked((long)ReadUInt64(field));

    /// <summary>An unsigned LEB128 varint of at most 10 bytes whose value fits 64 bits.</summary>
    public ulong ReadVarUInt64(string field, string fieldSuffix = "")
    {
        ulong value = 0;
        for (var shift = 0; shift < 64; shift += 7)
        {
            var start = _position;
            var b = ReadByte(field, fieldSuffix);
            if (shift == 63 && b > 1)
            {
                throw Malformed($"{field}{fieldSuffix} varint overflows 64 bits", start);
            }

            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                return value;
            }
        }

        throw Malformed($"{field}{fieldSuffix} varint is longer than 10 bytes", _position);
    }

    /// <summary>A varint length or count that must fit an int and, read as a byte count, the remaining input.</summary>
    public int ReadLength(string field, int minimumBytesPerUnit, string fieldSuffix = "")
    {
        var start = _position;
        var value = ReadVarUInt64(field, fieldSuffix);
        if (value > int.MaxValue || (long)value * minimumBytesPerUnit > Remaining)
        {
            throw Malformed(string.Create(CultureInfo.InvariantCulture, $"{field}{fieldSuffix} {value} exceeds the {Remaining} bytes that remain"), start);
        }

        return (int)value;
    }

    /// <summary>A varint-length-prefixed byte string, returned as a slice of the input (no copy).</summary>
    public ReadOnlySpan<byte> ReadBytes(string field)
    {
        var length = ReadLength(field, 1, " length");
        var value = _data.Slice(_position, length);
        _position += length;
        return value;
    }

    /// <summary>The raw bytes from <paramref name="start"/> up to the current position.</summary>
    public readonly ReadOnlySpan<byte> SliceFrom(int start) => _data[start.._position];

    public readonly void RequireEnd()
    {
        if (Remaining != 0)
        {
            throw Malformed(string.Create(CultureInfo.InvariantCulture, $"{Remaining} trailing bytes after the command"), _position);
        }
    }

    public static FormatException Malformed(string what, int offset) =>
        new(string.Create(CultureInfo.InvariantCulture, $"Malformed cache command: {what} (at byte {offset})."));

    private readonly void Require(int count, string field, string fieldSuffix = "")
    {
        if (Remaining < count)
        {
            throw Malformed(string.Create(CultureInfo.InvariantCulture, $"truncated while reading {field}{fieldSuffix}: needs {count} bytes, {Remaining} remain"), _position);
        }
    }
}

/// <summary>Writes the same encoding <see cref="EntryReader"/> reads, into a span already sized by <see cref="VarIntSize"/> arithmetic.</summary>
internal ref struct EntryWriter
{
    private readonly Span<byte> _buffer;
    private int _position;

    public EntryWriter(Span<byte> buffer)
    {
        _buffer = buffer;
        _position = 0;
    }

    public readonly int Position => _position;

    public static int VarIntSize(ulong value)
    {
        var size = 1;
        while (value >= 0x80)
        {
            value >>= 7;
            size++;
        }

        return size;
    }

    public static int BytesSize(int length) => VarIntSize((ulong)length) + length;

    public void WriteByte(byte value) => _buffer[_position++] = value;

    public void WriteUInt64(ulong value)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(_buffer.Slice(_position, 8), value);
        _position += 8;
    }

    public void WriteInt64(long value) => WriteUInt64(unchecked((ulong)value));

    public void WriteVarUInt64(ulong value)
    {
        while (value >= 0x80)
        {
            _buffer[_position++] = (byte)(value | 0x80);
            value >>= 7;
        }

        _buffer[_position++] = (byte)value;
    }

    /// <summary>Bytes as they are, without a length (the caller wrote one that covers them).</summary>
    public void WriteRaw(ReadOnlySpan<byte> value)
    {
        value.CopyTo(_buffer[_position..]);
        _position += value.Length;
    }

    public void WriteBytes(ReadOnlySpan<byte> value)
    {
        WriteVarUInt64((ulong)value.Length);
        value.CopyTo(_buffer[_position..]);
        _position += value.Length;
    }
}
