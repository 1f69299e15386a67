namespace Dcache.Cache;

/// <summary>
/// One stored key. Also a node of two orders every replica shares: the write-order list (oldest written first, which is
/// the eviction order) and, when it has a TTL, the expiry index.
/// </summary>
internal sealed class CacheEntry
{
    /// <summary>
    /// Bytes charged per key on top of the key and value themselves: roughly this object (64), the two array headers (48),
    /// the dictionary slot (28) — a fixed constant rather than a measurement, so that every replica charges the same.
    /// </summary>
    public const long OverheadBytes = 140;

    /// <summary>The expiry of a key without TTL; sorts after every real time, so "expired" is one comparison.</summary>
    public const long NoExpiry = long.MaxValue;

    public CacheEntry(byte[] key, byte[] value)
    {
        Key = key;
        Value = value;
    }

    public byte[] Key { get; }

    /// <summary>Replaced, never mutated in place: replies and readers may hold on to an old value array.</summary>
    public byte[] Value;

    public long ExpireAtMs = NoExpiry;

    /// <summary>Breaks ties among equal expiry times in the expiry index. Local only: tied keys always share their fate (all purged or none), so the tie order never shows in replicated state.</summary>
    public long ExpiryTieBreak;

    public CacheEntry? Older;
    public CacheEntry? Newer;

    /// <summary>
    /// The key's place in SCAN's order (<see cref="ScanOrder"/>); <see cref="ScanOrder.Unplaced"/> until SCAN's index
    /// takes the entry in, <see cref="ScanOrder.Removed"/> once removed while an index held it. Local, and computed once,
    /// lazily, so that writes never pay for hashing.
    /// </summary>
    public long ScanPosition = ScanOrder.Unplaced;

    /// <summary>
    /// When the key was last written, as a count of writes this machine applied (local, never replicated): the write
    /// order is this number's order, which lets a walk begun at one instant tell the keys it must still visit from the
    /// ones written after it began (<see cref="WriteOrderWalk"/>).
    /// </summary>
    public long WriteSequence;

    public bool HasExpiry => ExpireAtMs != NoExpiry;

    public long ChargedBytes => ChargeFor(Key.Length, Value.Length);

    public static long ChargeFor(int keyLength, int valueLength) => keyLength + (long)valueLength + OverheadBytes;

    public bool IsExpiredAt(long nowMs) => ExpireAtMs <= nowMs;
}

/// <summary>Orders the expiry index: earliest expiry first.</summary>
internal sealed class ExpiryOrder : IComparer<CacheEntry>
{
    public static readonly ExpiryOrder Instance = new();

    public int Compare(CacheEntry? x, CacheEntry? y)
    {
        var byTime = x!.ExpireAtMs.CompareTo(y!.ExpireAtMs);
        return byTime != 0 ? byTime : x.ExpiryTieBreak.CompareTo(y.ExpiryTieBreak);
    }
}

/// <summary>
/// A client session (Raft dissertation 6.3): the last sequence number applied for this client and the reply it got, so that
/// a retry of that write returns the same reply without applying twice. Sessions form a list in order of last activity.
/// </summary>
internal sealed class ClientSession
{
    public ClientSession(ulong clientId)
    {
        ClientId = clientId;
    }

    public ulong ClientId { get; }

    public ulong LastSequence;
    public CacheReply LastReply;
    public long LastActiveMs;
    public ClientSession? Older;
    public ClientSession? Newer;
}
