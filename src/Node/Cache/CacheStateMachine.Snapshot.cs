using System.Globalization;
using System.Text;

namespace Dcache.Node.Cache;

/// <summary>
/// Snapshots. The format is canonical — keys in write order (oldest first), sessions in activity order — so equal states
/// give equal bytes, and the SHA-256 that ends the snapshot doubles as the state digest replicas compare.
/// </summary>
/// <remarks>
/// Format, version 1 (integers little-endian, "varint" unsigned LEB128, "bytes" a varint length then the bytes):
/// <code>
/// "DCSNAP01" magic (8) | u8 version (=1) | u64 applied index | i64 clock (unix ms)
/// varint key count   | per key, oldest written first: bytes key | bytes value | i64 expire-at ms (i64.MaxValue = none)
/// varint session count | per session, least recently active first: u64 client id | varint last sequence | i64 last active ms | reply
/// 32-byte SHA-256 of every byte before it
/// reply = u8 kind | Integer: i64 | Bulk: bytes | Error: bytes (UTF-8) | Array: varint count, replies | Ok, Nil: nothing
/// </code>
/// The snapshot must be the whole stream: bytes after the trailer are reported as corruption.
/// </remarks>
public sealed partial class CacheStateMachine
{
    public const byte SnapshotFormatVersion = 1;

    /// <summary>Redis's limit for a key or value; anything longer in a snapshot can only be corruption.</summary>
    private const int MaxStringLength = 512 * 1024 * 1024;

    private const int MaxReplyDepth = 8;
    private const int MaxPreallocatedKeys = 1 << 20;

    private static ReadOnlySpan<byte> SnapshotMagic => "DCSNAP01"u8;

    /// <summary>Writes the replicated state to <paramref name="output"/> in chunks; returns the state digest (the SHA-256 trailer).</summary>
    public byte[] WriteSnapshot(Stream output)
    {
        ArgumentNullException.ThrowIfNull(output);
        using var sink = new SnapshotSink(output);
        sink.WriteRaw(SnapshotMagic);
        sink.WriteByte(SnapshotFormatVersion);
        sink.WriteUInt64(_appliedIndex);
        sink.WriteInt64(_clockMs);

        sink.WriteVarUInt64((ulong)_entries.Count);
        for (var entry = _oldestWritten; entry is not null; entry = entry.Newer)
        {
            sink.WriteBytes(entry.Key);
            sink.WriteBytes(entry.Value);
            sink.WriteInt64(entry.ExpireAtMs);
        }

        sink.WriteVarUInt64((ulong)_sessions.Count);
        for (var session = _leastRecentSession; session is not null; session = session.Newer)
        {
            sink.WriteUInt64(session.ClientId);
            sink.WriteVarUInt64(session.LastSequence);
            sink.WriteInt64(session.LastActiveMs);
            WriteReply(sink, session.LastReply);
        }

        return sink.Finish();
    }

    /// <summary>
    /// The state digest: SHA-256 over the canonical snapshot bytes, as lowercase hex. Replicas at the same applied index
    /// must have the same digest. Streams the snapshot through the hash; no copy of the state is held.
    /// </summary>
    public string Digest() => Convert.ToHexStringLower(WriteSnapshot(Stream.Null));

    /// <summary>
    /// Replaces this machine's state with the snapshot's. The snapshot is read and checked completely before anything is
    /// replaced, so on <see cref="InvalidDataException"/> (corrupt, truncated, or an unknown version) the state is unchanged.
    /// Local counters (hits, misses, evictions, expirations) restart from zero.
    /// </summary>
    public void LoadSnapshot(Stream input)
    {
        var loaded = FromSnapshot(input, Options);
        _entries = loaded._entries;
        _entriesBySpan = loaded._entriesBySpan;
        _expiryIndex = loaded._expiryIndex;
        _oldestWritten = loaded._oldestWritten;
        _newestWritten = loaded._newestWritten;
        _usedBytes = loaded._usedBytes;
        _sessions = loaded._sessions;
        _leastRecentSession = loaded._leastRecentSession;
        _mostRecentSession = loaded._mostRecentSession;
        _clockMs = loaded._clockMs;
        _appliedIndex = loaded._appliedIndex;
        _nextExpiryTieBreak = loaded._nextExpiryTieBreak;
        _evictedKeys = 0;
        _expiredKeys = 0;
        _hits = 0;
        _misses = 0;
        _malformedEntries = 0;
    }

    /// <summary>A new state machine holding the snapshot's state; see <see cref="LoadSnapshot"/> for the checks.</summary>
    public static CacheStateMachine FromSnapshot(Stream input, CacheStateMachineOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        var machine = new CacheStateMachine(options);
        using var source = new SnapshotSource(input);

        Span<byte> magic = stackalloc byte[8];
        for (var i = 0; i < magic.Length; i++)
        {
            magic[i] = source.ReadByte("magic");
        }

        if (!magic.SequenceEqual(SnapshotMagic))
        {
            throw SnapshotSource.Corrupt("not a cache snapshot (bad magic)", 0);
        }

        var version = source.ReadByte("format version");
        if (version != SnapshotFormatVersion)
        {
            throw SnapshotSource.Corrupt(string.Create(CultureInfo.InvariantCulture, $"format version {version} is not supported (this build reads {SnapshotFormatVersion})"), 8);
        }

        machine._appliedIndex = source.ReadUInt64("applied index");
        machine._clockMs = source.ReadInt64("clock");

        var keyCount = source.ReadLength("key count", int.MaxValue);
        machine._entries.EnsureCapacity(Math.Min(keyCount, MaxPreallocatedKeys));
        for (var i = 0; i < keyCount; i++)
        {
            var offset = source.Position;
            var key = source.ReadBytes("key", MaxStringLength);
            var value = source.ReadBytes("value", MaxStringLength);
            var expireAt = source.ReadInt64("expiry time");
            var entry = new CacheEntry(key, value);
            if (!machine._entries.TryAdd(key, entry))
            {
                throw SnapshotSource.Corrupt("a key appears twice", offset);
            }

            machine._usedBytes += entry.ChargedBytes;
            machine.AppendNewest(entry);
            machine.ChangeExpiry(entry, expireAt);
        }

        var sessionCount = source.ReadLength("session count", int.MaxValue);
        long previousActivity = long.MinValue;
        for (var i = 0; i < sessionCount; i++)
        {
            var offset = source.Position;
            var session = new ClientSession(source.ReadUInt64("session client id"))
            {
                LastSequence = source.ReadVarUInt64("session sequence"),
                LastActiveMs = source.ReadInt64("session activity time"),
                LastReply = ReadReply(source, depth: 0),
            };

            if (session.ClientId == CommandEnvelope.NoSession)
            {
                throw SnapshotSource.Corrupt("a session has client id 0", offset);
            }

            // The activity list must be sorted for session expiry to stop at the first live session.
            if (session.LastActiveMs < previousActivity)
            {
                throw SnapshotSource.Corrupt("sessions are not in order of activity", offset);
            }

            if (!machine._sessions.TryAdd(session.ClientId, session))
            {
                throw SnapshotSource.Corrupt("a session appears twice", offset);
            }

            previousActivity = session.LastActiveMs;
            machine.AppendSession(session);
        }

        source.VerifyTrailer();
        return machine;
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

    private static CacheReply ReadReply(SnapshotSource source, int depth)
    {
        var offset = source.Position;
        var kind = (CacheReplyKind)source.ReadByte("reply kind");
        switch (kind)
        {
            case CacheReplyKind.Ok:
                return CacheReply.Ok;
            case CacheReplyKind.Nil:
                return CacheReply.Nil;
            case CacheReplyKind.Integer:
                return CacheReply.FromInteger(source.ReadInt64("integer reply"));
            case CacheReplyKind.Bulk:
                return CacheReply.FromBulk(source.ReadBytes("bulk reply", MaxStringLength));
            case CacheReplyKind.Error:
                {
                    var text = source.ReadBytes("error reply", MaxStringLength);
                    if (text.Length == 0)
                    {
                        throw SnapshotSource.Corrupt("an error reply has no text", offset);
                    }

                    return CacheReply.FromError(Encoding.UTF8.GetString(text));
                }

            case CacheReplyKind.Array when depth < MaxReplyDepth:
                {
                    var items = new CacheReply[source.ReadLength("array reply length", MaxStringLength)];
                    for (var i = 0; i < items.Length; i++)
                    {
                        items[i] = ReadReply(source, depth + 1);
                    }

                    return CacheReply.FromArray(items);
                }

            default:
                throw SnapshotSource.Corrupt(string.Create(CultureInfo.InvariantCulture, $"invalid reply kind {(byte)kind} at nesting depth {depth}"), offset);
        }
    }
}
