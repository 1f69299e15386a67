namespace Dcache.Cache;

/// <summary>
/// SCAN's order of keys: by a 63-bit hash of the key's bytes (its position), ties by the bytes themselves. A SCAN
/// cursor is a position in this order, and a client's successive SCAN calls may reach different replicas, restarted
/// ones among them; so the hash is SipHash-1-3 under a constant key, the same in every process and every build, where
/// the dictionary's hash is keyed per process. Changing the constants would change what every cursor means: they are
/// part of the protocol.
/// </summary>
/// <remarks>
/// The key being public, a client could search for keys that share a position. SCAN returns all keys of a position in
/// one reply (a call never stops inside a position), so such keys cost it nothing but a longer reply; and finding k keys
/// on one 63-bit position takes about 2^(63(k-1)/k) hashes, far out of reach for any k that would make a reply long.
/// </remarks>
internal static class ScanOrder
{
    /// <summary>An entry SCAN's index has not placed yet.</summary>
    public const long Unplaced = -1;

    /// <summary>An entry removed from the cache while SCAN's index held it (or was about to place it).</summary>
    public const long Removed = -2;

    // Arbitrary, fixed for good: the ASCII of "dcache-s" and "can-ordr".
    private const ulong HashKey0 = 0x64636163_68652d73;
    private const ulong HashKey1 = 0x63616e2d_6f726472;

    /// <summary>The key's position, 0 to <see cref="long.MaxValue"/>: cursors stay within what clients parse as a signed 64-bit number.</summary>
    public static long PositionOf(ReadOnlySpan<byte> key) => (long)(SipHash.Hash13(HashKey0, HashKey1, key) >> 1);

    /// <summary>The entry's position, hashed on first use and kept on the entry.</summary>
    public static long Place(CacheEntry entry)
    {
        if (entry.ScanPosition == Unplaced)
        {
            entry.ScanPosition = PositionOf(entry.Key);
        }

        return entry.ScanPosition;
    }
}
