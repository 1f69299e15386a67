using System.Buffers.Binary;
using Dcache.Raft;
using FASTER.core;

namespace Dcache.Storage;

/// <summary>
/// The records of the Raft log. Frame (<see cref="RecordFrame"/>) then, by kind:
/// <list type="bullet">
/// <item>Entry: u64 index, u64 term, payload (frame sub-type = the Raft entry type)</item>
/// <item>Commit: u64 commit index (the commit part of the hard state, written with the entries it follows)</item>
/// <item>SnapshotInstalled: u64 index, u64 term, membership (a snapshot received from the leader)</item>
/// </list>
/// </summary>
internal enum RaftRecordKind : byte
{
    Entry = 1,
    Commit = 2,
    SnapshotInstalled = 3,
}

/// <summary>
/// Serialises one record straight into FasterLog's page (no intermediate buffer) and remembers its CRC for the
/// chain. A class, reused, so that FasterLog's generic Enqueue neither boxes it nor copies it.
/// </summary>
internal sealed class RaftRecordWriter : ILogEnqueueEntry
{
    public const int EntryBodyFixed = 16;

    private RaftRecordKind _kind;
    private byte _subType;
    private ulong _first;
    private ulong _second;
    private ReadOnlyMemory<byte> _payload;
    private Membership? _membership;

    public uint PreviousCrc { get; set; }

    /// <summary>The CRC of the record last serialised (the next record chains to it).</summary>
    public uint LastCrc { get; private set; }

    public int SerializedLength => RecordFrame.Size + BodyLength;

    private int BodyLength => _kind switch
    {
        RaftRecordKind.Entry => EntryBodyFixed + _payload.Length,
        RaftRecordKind.Commit => 8,
        _ => 16 + MembershipCodec.EncodedLength(_membership!),
    };

    public static int EntryRecordLength(int payloadLength) => RecordFrame.Size + EntryBodyFixed + payloadLength;

    public RaftRecordWriter ForEntry(in Entry entry)
    {
        (_kind, _subType, _first, _second, _payload, _membership) = (RaftRecordKind.Entry, (byte)entry.Type, entry.Index, entry.Term, entry.Data, null);
        return this;
    }

    public RaftRecordWriter ForCommit(ulong commit)
    {
        (_kind, _subType, _first, _second, _payload, _membership) = (RaftRecordKind.Commit, 0, commit, 0, default, null);
        return this;
    }

    public RaftRecordWriter ForSnapshot(SnapshotMetadata snapshot)
    {
        (_kind, _subType, _first, _second, _payload, _membership) = (RaftRecordKind.SnapshotInstalled, 0, snapshot.Index, snapshot.Term, default, snapshot.Membership);
        return this;
    }

    public void SerializeTo(Span<byte> dest)
    {
        var bodyLength = BodyLength;
        RecordFrame.Write(dest, (byte)_kind, _subType, PreviousCrc, bodyLength);
        var body = dest[RecordFrame.Size..];
        BinaryPrimitives.WriteUInt64LittleEndian(body, _first);
        switch (_kind)
        {
            case RaftRecordKind.Entry:
                BinaryPrimitives.WriteUInt64LittleEndian(body[8..], _second);
                _payload.Span.CopyTo(body[EntryBodyFixed..]);
                break;
            case RaftRecordKind.SnapshotInstalled:
                BinaryPrimitives.WriteUInt64LittleEndian(body[8..], _second);
                MembershipCodec.Write(_membership!, body[16..]);
                break;
            case RaftRecordKind.Commit:
                break;
        }

        LastCrc = RecordFrame.Seal(dest[..(RecordFrame.Size + bodyLength)]);
        PreviousCrc = LastCrc;
    }
}

/// <summary>Reads the fields of a Raft log record (already validated by the scanner or the reader).</summary>
internal static class RaftRecordReader
{
    public static RaftRecordKind Kind(ReadOnlySpan<byte> record) => (RaftRecordKind)RecordFrame.Kind(record);

    public static ulong First(ReadOnlySpan<byte> record) => BinaryPrimitives.ReadUInt64LittleEndian(RecordFrame.Body(record));

    public static ulong Second(ReadOnlySpan<byte> record) => BinaryPrimitives.ReadUInt64LittleEndian(RecordFrame.Body(record)[8..]);

    public static ReadOnlySpan<byte> EntryPayload(ReadOnlySpan<byte> record) => RecordFrame.Body(record)[RaftRecordWriter.EntryBodyFixed..];

    public static SnapshotMetadata Snapshot(ReadOnlySpan<byte> record) =>
        new(First(record), Second(record), MembershipCodec.Read(RecordFrame.Body(record)[16..], out _));
}
