namespace Dcache.Cache;

/// <summary>
/// Settings that change what apply does. Every replica of a group must use the same values, or their states diverge
/// (a different cap evicts different keys).
/// </summary>
public sealed record CacheStateMachineOptions
{
    /// <summary>Upper bound on charged memory (key + value + a fixed per-key overhead), in bytes; 0 means no cap.</summary>
    public long MemoryCapBytes { get; init; }

    /// <summary>A client session idle longer than this (by leader-stamped time) is dropped; a retry after that applies again.</summary>
    public TimeSpan SessionTimeout { get; init; } = TimeSpan.FromHours(1);

    internal void Validate()
    {
        if (MemoryCapBytes < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MemoryCapBytes), MemoryCapBytes, "The memory cap must be 0 (none) or positive.");
        }

        if (SessionTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(SessionTimeout), SessionTimeout, "The session timeout must be positive.");
        }
    }
}

/// <summary>
/// A point-in-time view of the cache for metrics. Keys and bytes are replicated state; the counters (evicted, expired,
/// hits, misses, malformed) are this node's own and restart from zero with the process or a snapshot load.
/// </summary>
public readonly record struct CacheStatistics(
    ulong AppliedIndex,
    long Keys,
    long KeysWithExpiry,
    long UsedBytes,
    long MemoryCapBytes,
    int Sessions,
    long EvictedKeys,
    long ExpiredKeys,
    long Hits,
    long Misses,
    long MalformedEntries,
    long ClockMs);
