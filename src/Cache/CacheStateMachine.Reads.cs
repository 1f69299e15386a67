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
        return ms < 0 ? ms : (ms + 500) / 1000;
    }

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

    private CacheEntry? FindLiveForRead(ReadOnlySpan<byte> key, long nowMs)
    {
        if (_entriesBySpan.TryGetValue(key, out var entry) && !entry.IsExpiredAt(nowMs))
        {
            Interlocked.Increment(ref _hits);
            return entry;
        }

        Interlocked.Increment(ref _misses);
        return null;
    }
}
