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

    public CacheEntry(byte[] key, ReadOnlyMemory<byte> value)
    {
        Key = key;
        Value = value;
    }

    public byte[] Key { get; }

    /// <summary>
    /// Replaced, never changed in place: replies, readers and snapshots may hold on to an old value. Only bytes past its
    /// end may be written, in <see cref="GrowthBuffer"/>.
    /// </summary>
    public ReadOnlyMemory<byte> Value;

    /// <summary>
    /// The array <see cref="Value"/> starts at when this entry alone may write past the value's end (spare room an
    /// APPEND left, zero from the value's end on), else null. Appends to a large value then copy it only when the room
    /// runs out, not at every append. Local: the room is never charged nor replicated, so every replica charges alike.
    /// </summary>
    public byte[]? GrowthBuffer;

    public long ExpireAtMs = NoExpiry;

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

    /// <summary>
    /// Replicated: the index of the entry that last changed the key (created it, or changed its value or expiry), which
    /// WATCH compares (<see cref="CacheStateMachine.RevisionFloor"/>). Not charged: <see cref="OverheadBytes"/> stays as
    /// every build charges it.
    /// </summary>
    public ulong Revision;

    /// <summary>The key's slot in RANDOMKEY's sample (<see cref="RandomKeySample"/>): local, never replicated.</summary>
    public int RandomSlot;

    public bool HasExpiry => ExpireAtMs != NoExpiry;

    public long ChargedBytes => ChargeFor(Key.Length, Value.Length);

    public static long ChargeFor(int keyLength, int valueLength) => keyLength + (long)valueLength + OverheadBytes;

    public bool IsExpiredAt(long nowMs) => ExpireAtMs <= nowMs;
}

/// <summary>
/// Orders the expiry index: earliest expiry first, keys of the same expiry by their bytes (<see cref="KeyBytesOrder"/>).
/// Both are replicated state, so every replica orders its keys alike whatever its history (entries applied or a snapshot
/// loaded), and a purge or the memory cap may stop inside a millisecond of expiry and still remove the same keys
/// everywhere. Keys are unique, so the order is total.
/// </summary>
internal sealed class ExpiryOrder : IComparer<CacheEntry>
{
    public static readonly ExpiryOrder Instance = new();

    public int Compare(CacheEntry? x, CacheEntry? y)
    {
        var byTime = x!.ExpireAtMs.CompareTo(y!.ExpireAtMs);
        return byTime != 0 ? byTime : KeyBytesOrder.Instance.Compare(x, y);
    }

    /// <summary>Whether <paramref name="entry"/> sorts at or before (<paramref name="expireAtMs"/>, <paramref name="key"/>).</summary>
    public static bool IsAtOrBefore(CacheEntry entry, long expireAtMs, ReadOnlySpan<byte> key) =>
        entry.ExpireAtMs < expireAtMs || (entry.ExpireAtMs == expireAtMs && KeyBytesOrder.Compare(entry.Key, key) <= 0);
}

/// <summary>Orders keys by their bytes, unsigned, as memcmp does, a shorter key before the longer one it starts: an order that depends on the keys alone.</summary>
internal sealed class KeyBytesOrder : IComparer<CacheEntry>
{
    public static readonly KeyBytesOrder Instance = new();

    public static int Compare(ReadOnlySpan<byte> x, ReadOnlySpan<byte> y) => x.SequenceCompareTo(y);

    public int Compare(CacheEntry? x, CacheEntry? y) => Compare(x!.Key, y!.Key);
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
