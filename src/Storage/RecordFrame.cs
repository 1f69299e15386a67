using System.Buffers.Binary;

namespace Dcache.Storage;

/// <summary>
/// The frame every record of this layer carries inside its FasterLog entry (all integers little-endian):
/// <code>
///  0  u8   format version (1)
///  1  u8   record kind (per log: Raft entry, commit index, snapshot chunk, ...)
///  2  u8   sub-type (the Raft entry type for entries)
///  3  u8   reserved, 0
///  4  u32  CRC-32C of bytes [0,4) and [8, end)
///  8  u32  CRC of the record written just before this one (the chain)
/// 12  u32  body length (bytes after this 16-byte frame)
/// 16  ...  body
/// </code>
/// The chain is what lets recovery read past the last recorded commit point safely: a record left over from an
/// earlier run (a torn write that was later overwritten only in part) has a valid CRC of its own but does not
/// chain to the record before it, so it is not mistaken for a newer write.
/// </summary>
internal static class RecordFrame
{
    public const byte FormatVersion = 1;
    public const int Size = 16;

    public static void Write(Span<byte> record, byte kind, byte subType, uint previousCrc, int bodyLength)
    {
        record[0] = FormatVersion;
        record[1] = kind;
        record[2] = subType;
        record[3] = 0;
        BinaryPrimitives.WriteUInt32LittleEndian(record[8..], previousCrc);
        BinaryPrimitives.WriteUInt32LittleEndian(record[12..], (uint)bodyLength);
    }

    /// <summary>Computes and stores the record's CRC once its frame and body are in place; returns it.</summary>
    public static uint Seal(Span<byte> record)
    {
        var crc = ComputeCrc(record);
        BinaryPrimitives.WriteUInt32LittleEndian(record[4..], crc);
        return crc;
    }

    public static uint ComputeCrc(ReadOnlySpan<byte> record) => Crc32C.Append(Crc32C.Compute(record[..4]), record[8..]);

    public static byte Kind(ReadOnlySpan<byte> record) => record[1];

    public static byte SubType(ReadOnlySpan<byte> record) => record[2];

    public static uint StoredCrc(ReadOnlySpan<byte> record) => BinaryPrimitives.ReadUInt32LittleEndian(record[4..]);

    public static uint PreviousCrc(ReadOnlySpan<byte> record) => BinaryPrimitives.ReadUInt32LittleEndian(record[8..]);

    public static ReadOnlySpan<byte> Body(ReadOnlySpan<byte> record) => record[Size..];

    /// <summary>Null if the record is intact, else what is wrong with it.</summary>
    public static string? Validate(ReadOnlySpan<byte> record)
    {
        if (record.Length < Size)
        {
            return $"record of {record.Length} bytes is shorter than its {Size}-byte frame";
        }

        if (record[0] != FormatVersion)
        {
            return $"unknown record format version {record[0]}";
        }

        var bodyLength = BinaryPrimitives.ReadUInt32LittleEndian(record[12..]);
        if (bodyLength != (uint)(record.Length - Size))
        {
            return $"body length {bodyLength} does not match the entry length {record.Length}";
        }

        var stored = StoredCrc(record);
        var computed = ComputeCrc(record);
        return stored == computed ? null : $"checksum mismatch (stored {stored:x8}, computed {computed:x8})";
    }
}
