using System.Text;

namespace Dcache.Cache;

/// <summary>
/// The replicated state of a <see cref="CacheStateMachine"/> captured at one applied index: immutable, so it may be written
/// (any number of times, from any thread) while the machine goes on applying.
/// </summary>
/// <remarks>
/// The format is canonical — keys in write order (oldest first), sessions in activity order — so equal states give equal
/// bytes, and the SHA-256 trailer doubles as the state digest that replicas compare. Version 2 (integers little-endian,
/// "varint" unsigned LEB128, "bytes" a varint length then the bytes):
/// <code>
/// "DCSNAP01" magic (8) | u8 version (=2) | u64 applied index | i64 clock (unix ms)
/// u64 revision floor (> 0) | u64 removal floor | varint n | n x (varint bucket, ascending | varint revision): the removal
///                        table's buckets above the revision floor (the others count as the floor)
/// varint key count     | per key, oldest written first: bytes key | bytes value | i64 expire-at ms (i64.MaxValue = none) | varint revision
/// varint session count | per session, least recently active first: u64 client id | varint last sequence | i64 last active ms | reply
/// 32-byte SHA-256 of every byte before it
/// reply = u8 kind | Integer: i64 | Bulk: bytes | Error: bytes (UTF-8) | Array: varint count, replies | Ok, Nil: nothing
/// </code>
/// Revisions and floors are written as every replica agrees on them, at least the revision floor (a replica that started
/// from a snapshot without revisions knows less below it, and needs nothing there). Version 1 has no revision line and no
/// per-key revision; it is written while the revision floor is unset (0): revisions mean nothing yet, and a member whose
/// build reads only version 1 may still be in the cluster.
/// Written through a 64 KiB buffer; values larger than that go straight to the stream. The snapshot must be the whole
/// stream when loaded: bytes after the trailer are reported as corruption.
/// </remarks>
public sealed class CacheSnapshot
{
    // The keys in write order, in chunks (a capture taken in slices fills one chunk at a time; see SnapshotCapture).
    private readonly StoredKey[][] _keys;
    private readonly SessionRecord[] _sessions;
    private readonly RevisionState _revisions;

    internal CacheSnapshot(ulong appliedIndex, long clockMs, StoredKey[][] keys, int keyCount, SessionRecord[] sessions, RevisionState revisions)
    {
        _revisions = revisions;
        AppliedIndex = appliedIndex;
        ClockMs = clockMs;
        _keys = keys;
        KeyCount = keyCount;
        _sessions = sessions;
    }

    internal static ReadOnlySpan<byte> Magic => "DCSNAP01"u8;

    public ulong AppliedIndex { get; }

    public long ClockMs { get; }

    public int KeyCount { get; }

    public int SessionCount => _sessions.Length;

    /// <summary>
    /// Writes the snapshot to <paramref name="output"/> in chunks and returns its SHA-256 (the state digest). A
    /// cancellation stops it every few thousand keys (an operator's backup given up: serialising millions of keys for
    /// nobody would take seconds of a node's CPU).
    /// </summary>
    public byte[] WriteTo(Stream output, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(output);
        using var sink = new SnapshotSink(output);
        sink.WriteRaw(Magic);
        var floor = _revisions.Floor;
        var withRevisions = floor != 0;
        sink.WriteByte(withRevisions ? CacheStateMachine.SnapshotFormatVersion : CacheStateMachine.SnapshotFormatWithoutRevisions);
        sink.WriteUInt64(AppliedIndex);
        sink.WriteInt64(ClockMs);
        if (withRevisions)
        {
            WriteRevisionState(sink);
        }

        sink.WriteVarUInt64((ulong)KeyCount);
        var written = 0;
        foreach (var chunk in _keys)
        {
            foreach (var key in chunk)
            {
                if (++written % 4096 == 0)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                }

                sink.WriteBytes(key.Key);
                sink.WriteBytes(key.Value.Span);
                sink.WriteInt64(key.ExpireAtMs);
                if (withRevisions)
                {
                    sink.WriteVarUInt64(Math.Max(key.Revision, floor));
                }
            }
        }

        sink.WriteVarUInt64((ulong)_sessions.Length);
        foreach (var session in _sessions)
        {
            sink.WriteUInt64(session.ClientId);
            sink.WriteVarUInt64(session.LastSequence);
            sink.WriteInt64(session.LastActiveMs);
            WriteReply(sink, session.LastReply);
        }

        return sink.Finish();
    }

    /// <summary>The state digest (SHA-256 of the canonical bytes) as lowercase hex; hashes without keeping the bytes.</summary>
    public string Digest() => Convert.ToHexStringLower(WriteTo(Stream.Null));

    private void WriteRevisionState(SnapshotSink sink)
    {
        var floor = _revisions.Floor;
        sink.WriteUInt64(floor);
        sink.WriteUInt64(Math.Max(_revisions.RemovalFloor, floor));
        var table = _revisions.RemovedRevisions;
        var above = 0;
        foreach (var revision in table)
        {
            above += revision > floor ? 1 : 0;
        }

        sink.WriteVarUInt64((ulong)above);
        for (var bucket = 0; bucket < table.Length; bucket++)
        {
            if (table[bucket] > floor)
            {
                sink.WriteVarUInt64((ulong)bucket);
                sink.WriteVarUInt64(table[bucket]);
            }
        }
    }

    private static void WriteReply(SnapshotSink sink, CacheReply reply)
    {
        sink.WriteByte((byte)reply.Kind);
        switch (reply.Kind)
        {
            case CacheReplyKind.Integer:
                sink.WriteInt64(reply.Integer);
                break;
            case CacheReplyKind.Bulk:
                sink.WriteBytes(reply.Bulk.Span);
                break;
            case CacheReplyKind.Error:
                sink.WriteBytes(Encoding.UTF8.GetBytes(reply.ErrorMessage));
                break;
            case CacheReplyKind.Array:
                sink.WriteVarUInt64((ulong)reply.Items.Count);
                foreach (var item in reply.Items)
                {
                    WriteReply(sink, item);
                }

                break;
        }
    }

    internal readonly record struct StoredKey(byte[] Key, ReadOnlyMemory<byte> Value, long ExpireAtMs, ulong Revision);

    /// <summary>The revision floor, the removal floor and the removal table (a copy) at the snapshot's index.</summary>
    internal readonly record struct RevisionState(ulong Floor, ulong RemovalFloor, ulong[] RemovedRevisions);

    internal readonly record struct SessionRecord(ulong ClientId, ulong LastSequence, long LastActiveMs, CacheReply LastReply);
}
