namespace Dcache.Cache;

/// <summary>
/// Key revisions, for WATCH: what EXEC checks its watched keys against, as replicated state. A key's revision is the
/// index of the last entry that changed it (created, written, its expiry changed), set by every write Redis counts as
/// touching the key; a removed key's revision goes into a bounded table of removals by key hash. See docs/architecture.md
/// ("WATCH") for why the check is exact, where it may abort without a change, and why it never misses one.
/// </summary>
public sealed partial class CacheStateMachine
{
    /// <summary>
    /// Buckets in the removal table: a removed key's revision is kept under a hash of its key, so an absent watched key
    /// whose bucket saw another key written and removed after the WATCH aborts too (rare, and never the other way).
    /// </summary>
    internal const int RemovalBuckets = 4096;

    /// <summary>How many of the newest keys FLUSHALL records one by one; below them, the removal floor takes the rest.</summary>
    internal const int FlushRecordedKeys = 1024;

    // Replicated. The revision floor is the index of the first format 8 entry applied (0 before): every revision counts as
    // at least it, which makes revisions the same on every replica whatever snapshot (of a build without revisions) each
    // started from. The removal floor is the revision every absent key counts as having been removed at, at least.
    private ulong _revisionFloor;
    private ulong _removalFloor;
    private ulong[] _removedRevisions = new ulong[RemovalBuckets];

    /// <summary>
    /// The index of the first entry of format <see cref="CacheCommand.WatchVersion"/> or later this state applied, 0
    /// before: WATCH needs it set (a watch read below it would abort at EXEC anyway).
    /// </summary>
    public ulong RevisionFloor => _revisionFloor;

    /// <summary>
    /// WATCH's read: nil before the revision floor is set, otherwise the applied index it read at followed by 1 or 0 per
    /// key, whether the key is live at <paramref name="nowMs"/>. Changes nothing.
    /// </summary>
    public CacheReply Watch(IReadOnlyList<ReadOnlyMemory<byte>> keys, long nowMs)
    {
        ArgumentNullException.ThrowIfNull(keys);
        if (_revisionFloor == 0)
        {
            return CacheReply.Nil;
        }

        var items = new CacheReply[keys.Count + 1];
        items[0] = CacheReply.FromInteger((long)_appliedIndex);
        for (var i = 0; i < keys.Count; i++)
        {
            items[i + 1] = CacheReply.FromInteger(_entriesBySpan.TryGetValue(keys[i].Span, out var entry) && !entry.IsExpiredAt(nowMs) ? 1 : 0);
        }

        return CacheReply.FromArray(items);
    }

    /// <summary>
    /// WATCH's read as <see cref="Watch"/> answers it now, taken a slice at a time (<see cref="MultiKeyRead.Step"/>) while
    /// writes go on applying between slices: the applied index of now and each key's liveness as it stands now. Null
    /// before the revision floor is set (<see cref="Watch"/> then answers nil at once). Must run on the thread that applies
    /// writes.
    /// </summary>
    public MultiKeyRead? BeginWatchRead(ReadOnlyMemory<byte>[] keys, long nowMs)
    {
        ArgumentNullException.ThrowIfNull(keys);
        if (_revisionFloor == 0)
        {
            return null;
        }

        var read = new MultiKeyRead(this, _entriesBySpan, _writeSequence, keys, values: false, nowMs, _appliedIndex);
        _observers.Add(read);
        return read;
    }

    /// <summary>The revision as every replica agrees on it: at least the floor.</summary>
    private ulong Effective(ulong revision) => Math.Max(revision, _revisionFloor);

    /// <summary>The bucket of a key in the removal table: a fixed hash (part of the snapshot format), the same everywhere.</summary>
    internal static int RemovalBucket(ReadOnlySpan<byte> key) => (int)(SipHash.Hash13(0, 0, key) % RemovalBuckets);

    private void NoteRevisionFloor(ulong index, byte formatVersion)
    {
        if (_revisionFloor == 0 && formatVersion >= CacheCommand.WatchVersion)
        {
            _revisionFloor = index;
        }
    }

    private void NoteRemoved(CacheEntry entry)
    {
        ref var bucket = ref _removedRevisions[RemovalBucket(entry.Key)];
        bucket = Math.Max(bucket, entry.Revision);
    }

    /// <summary>
    /// A write Redis counts as touching an absent key that it leaves absent (SET with an expiry already past): as if the
    /// key were created and removed in this entry.
    /// </summary>
    private void NoteTouchedWhileAbsent(ReadOnlySpan<byte> key)
    {
        ref var bucket = ref _removedRevisions[RemovalBucket(key)];
        bucket = Math.Max(bucket, _appliedIndex);
    }

    /// <summary>
    /// FLUSHALL removes every key at once: the newest written are recorded one by one, and the revision of the newest
    /// left (the write order is the revision order) becomes the removal floor for the rest, in O(1) rather than O(keys).
    /// </summary>
    private void NoteFlushed()
    {
        var entry = _newestWritten;
        for (var i = 0; i < FlushRecordedKeys && entry is not null; i++, entry = entry.Older)
        {
            NoteRemoved(entry);
        }

        if (entry is not null)
        {
            _removalFloor = Math.Max(_removalFloor, entry.Revision);
        }
    }

    /// <summary>
    /// Whether <paramref name="watch"/>'s key changed after its WATCH read at <c>WatchedAt</c>: live now and changed
    /// since, or absent then; absent now (missing, or expired by <paramref name="now"/>) but live then; or absent then and
    /// now, but written since (an expired entry still stored, or one the removal table recorded). Absent then and live now
    /// without a write happens when the read judged expiry at a later time than this entry's stamp (a WATCH served by one
    /// leader, the EXEC stamped by the next, whose clock is behind): the key the client saw gone is back, which counts.
    /// </summary>
    private bool WatchedKeyChanged(in CacheCommand.Watch watch, long now)
    {
        if (_entriesBySpan.TryGetValue(watch.Key, out var entry))
        {
            if (!entry.IsExpiredAt(now))
            {
                return !watch.WasLive || Effective(entry.Revision) > watch.WatchedAt;
            }

            if (Effective(entry.Revision) > watch.WatchedAt)
            {
                return true;
            }
        }

        return watch.WasLive
            || Effective(Math.Max(_removedRevisions[RemovalBucket(watch.Key)], _removalFloor)) > watch.WatchedAt;
    }

    /// <summary>MULTI/EXEC after WATCH: nil, applying nothing, when a watched key changed; otherwise the transaction.</summary>
    private CacheReply ApplyWatchedTransaction(in CacheCommand command, long now)
    {
        foreach (var watch in command.Watches)
        {
            if (WatchedKeyChanged(watch, now))
            {
                return CacheReply.Nil;
            }
        }

        return ApplyTransaction(command.Commands, now);
    }
}
