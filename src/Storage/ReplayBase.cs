using System.Buffers.Binary;
using Dcache.Raft;

namespace Dcache.Storage;

/// <summary>
/// The Raft log state that replay starts from at the log's begin address: the compaction point (index and term of
/// FirstIndex - 1), the latest snapshot and the commit index as of the last compaction. Head truncation deletes
/// the records that established this state, so it is kept, durably, in the commit metadata before the head moves.
/// It may be newer than the begin address (written just before a truncation that did not happen): replay then
/// simply drops records at or below the compaction point.
/// </summary>
internal sealed record ReplayBase(ulong CompactIndex, ulong CompactTerm, SnapshotMetadata Snapshot, ulong Commit)
{
    public static ReplayBase Empty { get; } = new(0, 0, SnapshotMetadata.Empty, 0);

    public byte[] Encode()
    {
        var buffer = new byte[40 + MembershipCodec.EncodedLength(Snapshot.Membership)];
        BinaryPrimitives.WriteUInt64LittleEndian(buffer, CompactIndex);
        BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(8), CompactTerm);
        BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(16), Snapshot.Index);
        BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(24), Snapshot.Term);
        BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(32), Commit);
        MembershipCodec.Write(Snapshot.Membership, buffer.AsSpan(40));
        return buffer;
    }

    public static ReplayBase Decode(ReadOnlySpan<byte> data)
    {
        if (data.Length == 0)
        {
            return Empty;
        }

        var membership = MembershipCodec.Read(data[40..], out _);
        return new ReplayBase(
            BinaryPrimitives.ReadUInt64LittleEndian(data),
            BinaryPrimitives.ReadUInt64LittleEndian(data[8..]),
            new SnapshotMetadata(BinaryPrimitives.ReadUInt64LittleEndian(data[16..]), BinaryPrimitives.ReadUInt64LittleEndian(data[24..]), membership),
            BinaryPrimitives.ReadUInt64LittleEndian(data[32..]));
    }
}
