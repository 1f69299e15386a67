using System.Text;

namespace Dcache.Cache;

/// <summary>
/// The replicated state of a <see cref="CacheStateMachine"/> captured at one applied index: immutable, so it may be written
/// (any number of times, from any thread) while the machine goes on applying.
/// </summary>
/// <remarks>
/// The format is canonical — keys in write order (oldest first), sessions in activity order — so equal states give equal
/// bytes, and the SHA-256 trailer doubles as the state digest that replicas compare. Version 1 (integers little-endian,
/// "varint" unsigned LEB128, "bytes" a varint length then the bytes):
/// <code>
/// "DCSNAP01" magic (8) | u8 version (=1) | u64 applied index | i64 clock (unix ms)
/// varint key count     | per key, oldest written first: bytes key | bytes value | i64 expire-at ms (i64.MaxValue = none)
/// varint session count | per session, least recently active first: u64 client id | varint last sequence | i64 last active ms | reply
/// 32-byte SHA-256 of every byte before it
/// reply = u8 kind | Integer: i64 | Bulk: bytes | Error: bytes (UTF-8) | Array: varint count, replies | Ok, Nil: nothing
/// </code>
/// Written through a 64 KiB buffer; values larger than that go straight to the stream. The snapshot must be the whole
/// stream when loaded: bytes after the trailer are reported as corruption.
/// </remarks>
public sealed class CacheSnapshot
{
    // The keys in write order, in chunks (a capture taken in slices fills one chunk at a time; see SnapshotCapture).
    private readonly StoredKey[][] _keys;
    private readonly SessionRecord[] _sessions;

    internal CacheSnapshot(ulong appliedIndex, long clockMs, StoredKey[][] keys, int keyCount, SessionRecord[] sessions)
    {
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

    /// <summary>Writes the snapshot to <paramref name="output"/> in chunks and returns its SHA-256 (the state digest).</summary>
    public byte[] WriteTo(Stream output)
    {
        ArgumentNullException.ThrowIfNull(output);
        using var sink = new SnapshotSink(output);
        sink.WriteRaw(Magic);
        sink.WriteByte(CacheStateMachine.SnapshotFormatVersion);
        sink.WriteUInt64(AppliedIndex);
        sink.WriteInt64(ClockMs);

        sink.WriteVarUInt64((ulong)KeyCount);
        foreach (var chunk in _keys)
        {
            foreach (var key in chunk)
            {
                sink.WriteBytes(key.Key);
                sink.WriteBytes(key.Value);
                sink.WriteInt64(key.ExpireAtMs);
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

    internal readonly record struct StoredKey(byte[] Key, byte[] Value, long ExpireAtMs);

    internal readonly record struct SessionRecord(ulong ClientId, ulong LastSequence, long LastActiveMs, CacheReply LastReply);
}
