using System.Buffers.Binary;
using System.Numerics;

namespace Dcache.Storage;

/// <summary>
/// CRC-32C (Castagnoli), the checksum of every record this layer writes.
/// Why CRC-32C: <see cref="BitOperations.Crc32C(uint, ulong)"/> is a hardware instruction on x64 (SSE4.2) and
/// ARM64, so it costs well under a nanosecond per 8 bytes on the write path of every SET, needs no package, and
/// is the checksum ext4, iSCSI, RocksDB and etcd's WAL use for the same job (detecting torn and flipped bytes).
/// </summary>
public static class Crc32C
{
    public static uint Compute(ReadOnlySpan<byte> data) => Append(0, data);

    /// <summary>Continues a checksum over more bytes, so a record's header and body can be covered without copying.</summary>
    public static uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        crc = ~crc;
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }

        foreach (var b in data)
        {
            crc = BitOperations.Crc32C(crc, b);
        }

        return ~crc;
    }
}
