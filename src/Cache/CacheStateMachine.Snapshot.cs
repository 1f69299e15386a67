using System.Globalization;
using System.Text;

namespace Dcache.Cache;

/// <summary>
/// Snapshots: see <see cref="CacheSnapshot"/> for the format. Loading reads and checks the whole snapshot before it
/// replaces anything.
/// </summary>
public sealed partial class CacheStateMachine
{
    public const byte SnapshotFormatVersion = 2;

    /// <summary>
    /// The snapshot format without key revisions, still written while the revision floor is unset (revisions then mean
    /// nothing yet, and a member on a build that reads only this format may still need the snapshot), and still read:
    /// its keys and removals load with revision 0, which the floor set later lifts to the same value on every replica.
    /// </summary>
    public const byte SnapshotFormatWithoutRevisions = 1;

    /// <summary>Redis's limit for a key or value; anything longer in a snapshot can only be corruption.</summary>
    private const int MaxStringLength = 512 * 1024 * 1024;

    private const int MaxReplyDepth = 8;
    private const int MaxPreallocatedKeys = 1 << 20;

    /// <summary>About 6 ms of building at 1.5 s per 1,000,000 keys: a stop waits no longer than that for the check.</summary>
    public const int KeysPerCancellationCheck = 4096;

    /// <summary>
    /// Captures the replicated state as it is now, in one call of O(keys) time, without copying keys or values (stored
    /// arrays are never mutated, only replaced). The capture can then be written on another thread while apply carries
    /// on. On a large cache the walk itself is long (see <see cref="BeginSnapshotCapture"/> for one taken in slices).
    /// </summary>
    public CacheSnapshot CaptureSnapshot()
    {
        var keys = new CacheSnapshot.StoredKey[_entries.Count];
        var i = 0;
        for (var entry = _oldestWritten; entry is not null; entry = entry.Newer)
        {
            keys[i++] = new CacheSnapshot.StoredKey(entry.Key, entry.Value, entry.ExpireAtMs, entry.Revision);
        }

        return new CacheSnapshot(_appliedIndex, _clockMs, [keys], keys.Length, CaptureSessions(), CaptureRevisions());
    }

    /// <summary>
    /// Begins capturing the replicated state as it is now, to be taken a slice of keys at a time
    /// (<see cref="SnapshotCapture.Step"/>) while writes go on applying between slices; the result is what
    /// <see cref="CaptureSnapshot"/> would return now. What is not keys — applied index, clock, sessions — is copied
    /// here, in O(sessions): sessions change in place and are as many as clients, not keys. Must run on the thread that
    /// applies writes.
    /// </summary>
    public SnapshotCapture BeginSnapshotCapture() => new(this, BeginWalk(), _appliedIndex, _clockMs, CaptureSessions(), CaptureRevisions());

    /// <summary>The floors and a copy of the removal table (fixed size, so O(1)).</summary>
    private CacheSnapshot.RevisionState CaptureRevisions() => new(_revisionFloor, _removalFloor, (ulong[])_removedRevisions.Clone());

    private CacheSnapshot.SessionRecord[] CaptureSessions()
    {
        var sessions = new CacheSnapshot.SessionRecord[_sessions.Count];
        var i = 0;
        for (var session = _leastRecentSession; session is not null; session = session.Newer)
        {
            sessions[i++] = new CacheSnapshot.SessionRecord(session.ClientId, session.LastSequence, session.LastActiveMs, session.LastReply);
        }

        return sessions;
    }

    /// <summary>Writes the replicated state to <paramref name="output"/> in chunks; returns the state digest (the SHA-256 trailer).</summary>
    public byte[] WriteSnapshot(Stream output) => CaptureSnapshot().WriteTo(output);

    /// <summary>
    /// The state digest: SHA-256 over the canonical snapshot bytes, as lowercase hex. Replicas at the same applied index
    /// must have the same digest.
    /// </summary>
    public string Digest() => CaptureSnapshot().Digest();

    /// <summary>
    /// Replaces this machine's state with the snapshot's. The snapshot is read and checked completely before anything is
    /// replaced, so on <see cref="InvalidDataException"/> (corrupt, truncated, or an unknown version) the state is unchanged.
    /// Local counters (hits, misses, evictions, expirations) restart from zero.
    /// </summary>
    public void LoadSnapshot(Stream input) => ReplaceState(FromSnapshot(input, Options));

    /// <summary>
    /// Takes over <paramref name="loaded"/>'s state (built by <see cref="FromSnapshot"/>, possibly on another thread) in
    /// O(1): what installing a snapshot does on the apply thread once the state was built elsewhere. <paramref name="loaded"/>
    /// must not be used afterwards (the two would share containers). Local counters (hits, misses, evictions, expirations,
    /// malformed entries) go on counting: they are this process's, exported as counters that must never go back. Walks
    /// in progress finish over the state replaced, which nothing changes any more.
    /// </summary>
    public void ReplaceState(CacheStateMachine loaded)
    {
        ArgumentNullException.ThrowIfNull(loaded);
        _entries = loaded._entries;
        _entriesBySpan = loaded._entriesBySpan;
        _expiryIndex = loaded._expiryIndex;
        _randomKeys = loaded._randomKeys;
        _oldestWritten = loaded._oldestWritten;
        _newestWritten = loaded._newestWritten;
        _usedBytes = loaded._usedBytes;
        _sessions = loaded._sessions;
        _leastRecentSession = loaded._leastRecentSession;
        _mostRecentSession = loaded._mostRecentSession;
        _clockMs = loaded._clockMs;
        _appliedIndex = loaded._appliedIndex;
        _writeSequence = loaded._writeSequence;
        _revisionFloor = loaded._revisionFloor;
        _removalFloor = loaded._removalFloor;
        _removedRevisions = loaded._removedRevisions;
        DropScanIndex();
        DetachWalks();
    }

    /// <summary>
    /// A new state machine holding the snapshot's state; see <see cref="LoadSnapshot"/> for the checks. Building a few
    /// million keys takes seconds: <paramref name="cancellationToken"/> (a node stopping) ends it every
    /// <see cref="KeysPerCancellationCheck"/> keys with <see cref="OperationCanceledException"/>.
    /// </summary>
    public static CacheStateMachine FromSnapshot(Stream input, CacheStateMachineOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(input);
        var machine = new CacheStateMachine(options);
        using var source = new SnapshotSource(input);

        Span<byte> magic = stackalloc byte[8];
        for (var i = 0; i < magic.Length; i++)
        {
            magic[i] = source.ReadByte("magic");
        }

        if (!magic.SequenceEqual(CacheSnapshot.Magic))
        {
            throw SnapshotSource.Corrupt("not a cache snapshot (bad magic)", 0);
        }

        var version = source.ReadByte("format version");
        if (version is not (SnapshotFormatVersion or SnapshotFormatWithoutRevisions))
        {
            throw SnapshotSource.Corrupt(string.Create(CultureInfo.InvariantCulture, $"format version {version} is not supported (this build reads {SnapshotFormatWithoutRevisions} and {SnapshotFormatVersion})"), 8);
        }

        machine._appliedIndex = source.ReadUInt64("applied index");
        machine._clockMs = source.ReadInt64("clock");
        var withRevisions = version == SnapshotFormatVersion;
        if (withRevisions)
        {
            ReadRevisionState(source, machine);
        }

        var keyCount = source.ReadLength("key count", int.MaxValue);
        machine._entries.EnsureCapacity(Math.Min(keyCount, MaxPreallocatedKeys));
        for (var i = 0; i < keyCount; i++)
        {
            if (i % KeysPerCancellationCheck == 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
            }

            var offset = source.Position;
            var key = source.ReadBytes("key", MaxStringLength);
            var value = source.ReadBytes("value", MaxStringLength);
            var expireAt = source.ReadInt64("expiry time");
            var entry = new CacheEntry(key, value) { Revision = withRevisions ? source.ReadVarUInt64("key revision") : 0 };
            if (withRevisions && (entry.Revision < machine._revisionFloor || entry.Revision > machine._appliedIndex))
            {
                throw SnapshotSource.Corrupt("a key's revision is outside the revision floor and the applied index", offset);
            }

            if (!machine._entries.TryAdd(key, entry))
            {
                throw SnapshotSource.Corrupt("a key appears twice", offset);
            }

            machine._usedBytes += entry.ChargedBytes;
            machine.AppendNewest(entry);
            machine._randomKeys.Add(entry);
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

    private static void ReadRevisionState(SnapshotSource source, CacheStateMachine machine)
    {
        var offset = source.Position;
        machine._revisionFloor = source.ReadUInt64("revision floor");
        machine._removalFloor = source.ReadUInt64("removal floor");
        if (machine._revisionFloor == 0 || machine._revisionFloor > machine._appliedIndex || machine._removalFloor > machine._appliedIndex)
        {
            throw SnapshotSource.Corrupt("the revision floors do not fit the applied index", offset);
        }

        var count = source.ReadLength("removal bucket count", RemovalBuckets);
        var previous = -1;
        for (var i = 0; i < count; i++)
        {
            offset = source.Position;
            var bucket = source.ReadVarUInt64("removal bucket");
            var revision = source.ReadVarUInt64("removal revision");
            if (bucket >= RemovalBuckets || (long)bucket <= previous || revision <= machine._revisionFloor || revision > machine._appliedIndex)
            {
                throw SnapshotSource.Corrupt("the removal table is out of order or out of range", offset);
            }

            machine._removedRevisions[bucket] = revision;
            previous = (int)bucket;
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
