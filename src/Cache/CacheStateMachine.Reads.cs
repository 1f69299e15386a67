namespace Dcache.Cache;

/// <summary>
/// Reads. They take "now" from the caller (the node's clock) and hide keys expired by then without removing them:
/// removal happens only through applied entries, so that every replica's state stays identical.
/// </summary>
public sealed partial class CacheStateMachine
{
    /// <summary>GET: the value, shared with the store (never mutated; do not cast it back to an array and write to it).</summary>
    public bool TryGet(ReadOnlySpan<byte> key, long nowMs, out ReadOnlyMemory<byte> value)
    {
        var entry = FindLiveForRead(key, nowMs);
        value = entry is null ? ReadOnlyMemory<byte>.Empty : entry.Value;
        return entry is not null;
    }

    /// <summary>GET as a reply: Bulk, or Nil when absent or expired.</summary>
    public CacheReply Get(ReadOnlySpan<byte> key, long nowMs)
    {
        var entry = FindLiveForRead(key, nowMs);
        return entry is null ? CacheReply.Nil : CacheReply.FromBulk(entry.Value);
    }

    /// <summary>MGET: an Array with one Bulk or Nil per key, in order.</summary>
    public CacheReply MultiGet(ReadOnlySpan<ReadOnlyMemory<byte>> keys, long nowMs)
    {
        var items = new CacheReply[keys.Length];
        for (var i = 0; i < keys.Length; i++)
        {
            items[i] = Get(keys[i].Span, nowMs);
        }

        return CacheReply.FromArray(items);
    }

    /// <summary>EXISTS for one key.</summary>
    public bool ContainsKey(ReadOnlySpan<byte> key, long nowMs) => FindLiveForRead(key, nowMs) is not null;

    /// <summary>EXISTS k1 k2 ...: how many of the keys exist, a key named twice counted twice (as Redis does).</summary>
    public long CountExisting(ReadOnlySpan<ReadOnlyMemory<byte>> keys, long nowMs)
    {
        long count = 0;
        foreach (var key in keys)
        {
            if (FindLiveForRead(key.Span, nowMs) is not null)
            {
                count++;
            }
        }

        return count;
    }

    /// <summary>PTTL: -2 when absent (or expired), -1 without TTL, else the milliseconds left.</summary>
    public long TimeToLiveMs(ReadOnlySpan<byte> key, long nowMs)
    {
        var entry = FindLiveForRead(key, nowMs);
        if (entry is null)
        {
            return -2;
        }

        return entry.HasExpiry ? entry.ExpireAtMs - nowMs : -1;
    }

    /// <summary>TTL: as <see cref="TimeToLiveMs"/> but in seconds, rounded to the nearest second as Redis does ((ms + 500) / 1000).</summary>
    public long TimeToLiveSeconds(ReadOnlySpan<byte> key, long nowMs)
    {
        var ms = TimeToLiveMs(key, nowMs);
        return ms < 0 ? ms : RoundToSeconds(ms);
    }

    /// <summary>Milliseconds (not negative) to the nearest second, halves up, as Redis's (ms + 500) / 1000 but without its overflow near long.MaxValue.</summary>
    public static long RoundToSeconds(long ms) => (ms / 1000) + (ms % 1000 >= 500 ? 1 : 0);

    /// <summary>STRLEN: the value's length in bytes; 0 when absent.</summary>
    public long StringLength(ReadOnlySpan<byte> key, long nowMs) => FindLiveForRead(key, nowMs)?.Value.Length ?? 0;

    /// <summary>
    /// GETRANGE: the bytes from <paramref name="start"/> to <paramref name="end"/> inclusive, negative offsets counting from
    /// the end, clamped as Redis 7.0's getrangeCommand clamps them; an empty Bulk when absent or when the range is empty.
    /// </summary>
    public CacheReply GetRange(ReadOnlySpan<byte> key, long start, long end, long nowMs)
    {
        var entry = FindLiveForRead(key, nowMs);
        var length = entry?.Value.Length ?? 0;
        if (entry is null || (start < 0 && end < 0 && start > end))
        {
            return CacheReply.FromBulk([]);
        }

        start = start < 0 ? Math.Max(0, length + start) : start;
        end = Math.Min(end < 0 ? Math.Max(0, length + end) : end, length - 1L);
        return start > end || length == 0
            ? CacheReply.FromBulk([])
            : CacheReply.FromBulk(entry.Value.Span.Slice((int)start, (int)(end - start + 1)).ToArray());
    }

    /// <summary>EXPIRETIME / PEXPIRETIME: the absolute expiry in unix ms; -1 without one, -2 when absent.</summary>
    public long ExpireTimeMs(ReadOnlySpan<byte> key, long nowMs)
    {
        var entry = FindLiveForRead(key, nowMs);
        return entry is null ? -2 : entry.HasExpiry ? entry.ExpireAtMs : -1;
    }

    /// <summary>
    /// EXPIRETIME (seconds, rounded to the nearest as Redis's ttlGenericCommand rounds, but without adding 500 first, which
    /// would overflow for the latest times) or PEXPIRETIME; -1 without expiry, -2 when absent.
    /// </summary>
    public long ExpireTime(ReadOnlySpan<byte> key, long nowMs, bool milliseconds)
    {
        var expireAtMs = ExpireTimeMs(key, nowMs);
        return expireAtMs < 0 || milliseconds ? expireAtMs : RoundToSeconds(expireAtMs);
    }

    /// <summary>
    /// RANDOMKEY: a key alive at <paramref name="nowMs"/> (Bulk), or Nil when there is none. Not uniform, and O(log n) at
    /// most: a few draws among all keys, each taking a key without expiry as it is and one with an expiry if it is alive;
    /// should they all meet expired keys not yet purged, the key that expires last is alive if any key with an expiry is,
    /// and failing that a key without expiry is drawn. So it never returns an expired key, and finds one whenever one lives.
    /// </summary>
    public CacheReply RandomKey(long nowMs, Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var sample = _randomKeys;
        if (sample.Count == 0)
        {
            return CacheReply.Nil;
        }

        for (var draw = 0; draw < RandomKeyDraws; draw++)
        {
            var entry = sample[random.Next(sample.Count)];
            if (!entry.IsExpiredAt(nowMs))
            {
                return CacheReply.FromBulk(entry.Key);
            }
        }

        if (_expiryIndex.Max is { } latest && !latest.IsExpiredAt(nowMs))
        {
            return CacheReply.FromBulk(latest.Key);
        }

        return sample.PersistentCount == 0 ? CacheReply.Nil : CacheReply.FromBulk(sample[random.Next(sample.PersistentCount)].Key);
    }

    /// <summary>
    /// KEYS: the live keys that <paramref name="filter"/> accepts (all of them without one), in write order, which every
    /// replica shares. O(n): it visits every key, as Redis does, in this call (see <see cref="BeginKeys"/> for a read
    /// taken a slice at a time).
    /// </summary>
    public CacheReply Keys(long nowMs, KeyFilter? filter = null)
    {
        var read = BeginKeys(nowMs);
        read.Step(int.MaxValue);
        return read.ToReply(filter);
    }

    /// <summary>
    /// KEYS as of now, taken a slice at a time (<see cref="KeysRead.Step"/>) while writes go on applying between slices:
    /// it still gives the keys live at <paramref name="nowMs"/> among those stored at this instant, in this instant's
    /// write order. Must run on the thread that applies writes.
    /// </summary>
    public KeysRead BeginKeys(long nowMs) => new(this, BeginWalk(), nowMs);

    /// <summary>
    /// The horizon for a whole-millisecond purge (<see cref="CacheCommandKind.PurgeExpired"/>) that removes about
    /// <paramref name="maxKeys"/> at most: <paramref name="nowMs"/> when no more than that many have expired by then, else
    /// the expiry time of the <paramref name="maxKeys"/>-th soonest. A purge up to it also removes every other key expiring
    /// in that millisecond, however many: what a leader proposes while a member reads only format 4 or older, where a
    /// purge cannot stop inside a millisecond. O(maxKeys).
    /// </summary>
    public long PurgeHorizon(long nowMs, int maxKeys) => NthExpired(nowMs, maxKeys).Nth?.ExpireAtMs ?? nowMs;

    /// <summary>
    /// Where a purge that removes <paramref name="maxKeys"/> keys must stop when more than that have expired by
    /// <paramref name="nowMs"/>: at the <paramref name="maxKeys"/>-th soonest to expire, in the expiry index's order
    /// (expiry time, then the key's bytes), which every replica shares; null when no more than that many have expired
    /// (a purge up to <paramref name="nowMs"/> takes them all). What a leader proposes as a
    /// <see cref="CacheCommandKind.PurgeExpiredThroughKey"/> entry once every member reads it, so that one purge entry
    /// never holds every replica's apply for as long as removing a whole wave of keys expiring together takes. O(maxKeys).
    /// </summary>
    public PurgeCut? FindPurgeCut(long nowMs, int maxKeys) =>
        NthExpired(nowMs, maxKeys) is ({ } last, MoreExpired: true) ? new PurgeCut(last.ExpireAtMs, last.Key) : null;

    /// <summary>True when some key has expired by <paramref name="nowMs"/> but is still stored (a purge would remove it). O(1).</summary>
    public bool HasExpiredKeys(long nowMs) => _expiryIndex.Count > 0 && _expiryIndex.Min!.ExpireAtMs <= nowMs;

    /// <summary>DBSIZE: keys not expired by <paramref name="nowMs"/>. Costs O(expired but not yet purged).</summary>
    public long CountKeys(long nowMs)
    {
        long expired = 0;
        foreach (var entry in _expiryIndex)
        {
            if (!entry.IsExpiredAt(nowMs))
            {
                break;
            }

            expired++;
        }

        return _entries.Count - expired;
    }

    /// <summary>
    /// The <paramref name="n"/>-th key to expire (1 is the soonest) if it has expired by <paramref name="nowMs"/>, and
    /// whether another key after it has too. O(n).
    /// </summary>
    private (CacheEntry? Nth, bool MoreExpired) NthExpired(long nowMs, int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        var seen = 0;
        CacheEntry? nth = null;
        foreach (var entry in _expiryIndex)
        {
            if (entry.ExpireAtMs > nowMs)
            {
                break;
            }

            if (nth is not null)
            {
                return (nth, true);
            }

            if (++seen == n)
            {
                nth = entry;
            }
        }

        return (nth, false);
    }

    // RANDOMKEY's draws before it looks for a live key for sure: with half the keys expired, 1 call in 65,536 gets there.
    private const int RandomKeyDraws = 16;

    private CacheEntry? FindLiveForRead(ReadOnlySpan<byte> key, long nowMs)
    {
        var found = _entriesBySpan.TryGetValue(key, out var entry) && !entry.IsExpiredAt(nowMs);
        CountRead(found);
        return found ? entry : null;
    }

    /// <summary>Counts a key lookup of a read as a hit or a miss (reads may run at the same time, hence atomically).</summary>
    internal void CountRead(bool hit)
    {
        if (hit)
        {
            Interlocked.Increment(ref _hits);
        }
        else
        {
            Interlocked.Increment(ref _misses);
        }
    }
}

/// <summary>
/// Where a purge stops: after the key <paramref name="LastKey"/>, which expires at <paramref name="ExpireAtMs"/> (the body of a
/// <see cref="CacheCommandKind.PurgeExpiredThroughKey"/> entry). <paramref name="LastKey"/> is the stored key: do not write to it.
/// </summary>
public readonly record struct PurgeCut(long ExpireAtMs, ReadOnlyMemory<byte> LastKey);

/// <summary>Which keys a <see cref="CacheStateMachine.Keys"/> read returns.</summary>
public delegate bool KeyFilter(ReadOnlySpan<byte> key);
