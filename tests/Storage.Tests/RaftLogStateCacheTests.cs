using Dcache.Raft;

namespace Dcache.Storage.Tests;

/// <summary>
/// The recent-entry cache of <see cref="RaftLogState"/>: payloads of the newest entries stay in memory within a byte
/// budget, evicted oldest first. Compaction and truncation must keep the count of cached bytes and the eviction point
/// right, or the cache holds entries it should drop (memory beyond the budget) or drops the newest it should keep
/// (reads of them go to disk).
/// </summary>
public sealed class RaftLogStateCacheTests
{
    private const int EntryBytes = 20;

    private static void Add(RaftLogState state, ulong term = 1) =>
        state.Add(term, EntryType.Normal, address: 64, recordLength: EntryBytes + 32, data: new byte[EntryBytes]);

    private static bool[] CachedFlags(RaftLogState state)
    {
        var flags = new bool[state.Count];
        for (var i = 0; i < flags.Length; i++)
        {
            flags[i] = state.SlotAt(state.FirstIndex + (ulong)i).Cached;
        }

        return flags;
    }

    [Fact]
    public void Compacting_cached_entries_frees_their_bytes_for_newer_ones()
    {
        var state = new RaftLogState(ReplayBase.Empty, cacheBudgetBytes: 5 * EntryBytes);
        for (var i = 0; i < 5; i++)
        {
            Add(state);
        }

        Assert.Equal([true, true, true, true, true], CachedFlags(state));

        // Entries 1 to 3 leave with their bytes: two more fit in the budget beside 4 and 5.
        state.Compact(3);
        Add(state);
        Add(state);
        Assert.Equal(7UL, state.LastIndex);
        Assert.Equal([true, true, true, true], CachedFlags(state));
    }

    [Fact]
    public void Entries_appended_again_after_a_truncation_are_evicted_oldest_first()
    {
        var state = new RaftLogState(ReplayBase.Empty, cacheBudgetBytes: EntryBytes);
        Add(state);
        Add(state);
        Add(state);
        Assert.Equal([false, false, true], CachedFlags(state));

        // A new leader overwrites 2 and 3: the rewritten entries are the newest, and the older of them goes first.
        state.TruncateFrom(2);
        Add(state, term: 2);
        Add(state, term: 2);
        Assert.Equal([false, false, true], CachedFlags(state));
    }
}
