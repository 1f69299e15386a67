using System.Globalization;

namespace Dcache.Cache;

/// <summary>
/// The stored keys in <see cref="ScanOrder"/>, kept by one state machine for its own SCAN reads: local, built by the first
/// SCAN, never replicated and never in a snapshot. A replica that restarts or installs a snapshot builds its own; the
/// order depends on the keys alone, so every replica's index lists the same keys in the same order.
/// </summary>
/// <remarks>
/// <para>Writes pay O(1) for it: a created key is added to a list, a removed key is marked. The next SCAN hashes the
/// created keys, sorts them into a new run and merges runs of similar size (a log-structured merge): each run is more
/// than twice the size of the next, so there are at most log2(n) + 1 runs and a key is merged O(log n) times in its
/// life. Removed keys stay in their run, skipped by reads, until the index is rebuilt.</para>
/// <para>An index that has fallen far behind — more keys created but not placed, plus removed keys still held, than half
/// its size and than <see cref="MinimumSlack"/>, or removed keys' bytes past <see cref="MinimumRetainedBytes"/> and an
/// eighth of the cache — is dropped by the state machine, and the next SCAN builds a new one. That bounds the memory
/// removed keys keep alive, and makes a rebuild's O(n log n) an amortised O(log n) per write.</para>
/// </remarks>
internal sealed class ScanIndex
{
    /// <summary>How far behind any index may fall before it is dropped, however small it is.</summary>
    public const int MinimumSlack = 4096;

    /// <summary>
    /// Bytes of removed keys any index may keep alive, however small the cache; beyond that and an eighth of the cache's
    /// charged bytes it is dropped. Counting keys alone would let a client that sets and deletes one large value over and
    /// over keep thousands of those values alive, unseen by the memory cap.
    /// </summary>
    public const long MinimumRetainedBytes = 16L << 20;

    /// <summary>Redis's bound on a call's work when most of what it visits yields nothing (its maxiterations).</summary>
    private const long SlotsVisitedPerCount = 10;

    private readonly List<SortedRun> _runs = [];
    private readonly List<CacheEntry> _createdSinceCatchUp = [];
    private long _slots;
    private long _removedSlots;
    private long _removedBytes;

    private ScanIndex()
    {
    }

    /// <summary>The number of sorted runs: at most log2(keys) + 1.</summary>
    public int RunCount => _runs.Count;

    /// <summary>Indexes the <paramref name="keyCount"/> keys of the write-order list that starts at <paramref name="oldestWritten"/>. O(n log n).</summary>
    public static ScanIndex Build(CacheEntry? oldestWritten, int keyCount)
    {
        var positions = new long[keyCount];
        var entries = new CacheEntry[keyCount];
        var count = 0;
        for (var entry = oldestWritten; entry is not null; entry = entry.Newer)
        {
            positions[count] = ScanOrder.Place(entry);
            entries[count++] = entry;
        }

        if (count != keyCount)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"The write order holds {count} keys where the dictionary holds {keyCount}."));
        }

        var index = new ScanIndex();
        index.Add(SortedRun.Sort(positions, entries, count));
        return index;
    }

    /// <summary>Notes a key the cache just created. False when the index has fallen too far behind and should be dropped.</summary>
    public bool NoteCreated(CacheEntry entry)
    {
        _createdSinceCatchUp.Add(entry);
        return IsWithinSlack();
    }

    /// <summary>
    /// Notes a key the cache just removed. False when the index has fallen too far behind, or keeps too many bytes of
    /// removed keys alive for a cache of <paramref name="cacheUsedBytes"/>, and should be dropped.
    /// </summary>
    public bool NoteRemoved(CacheEntry entry, long cacheUsedBytes)
    {
        if (entry.ScanPosition >= 0)
        {
            // Placed, so in one of the runs (every stored key was placed by this index's build or a catch-up).
            _removedSlots++;
        }

        // Held until the index is dropped (in a run) or catches up (in the created list): counted either way.
        _removedBytes += entry.ChargedBytes;
        entry.ScanPosition = ScanOrder.Removed;
        return IsWithinSlack() && _removedBytes <= Math.Max(MinimumRetainedBytes, cacheUsedBytes / 8);
    }

    /// <summary>Places the keys created since the last call: O(k log k) for k of them, plus the merges they cause.</summary>
    public void CatchUp()
    {
        if (_createdSinceCatchUp.Count == 0)
        {
            return;
        }

        var positions = new long[_createdSinceCatchUp.Count];
        var entries = new CacheEntry[_createdSinceCatchUp.Count];
        var count = 0;
        foreach (var entry in _createdSinceCatchUp)
        {
            if (entry.ScanPosition != ScanOrder.Removed)
            {
                positions[count] = ScanOrder.Place(entry);
                entries[count++] = entry;
            }
        }

        _createdSinceCatchUp.Clear();
        if (_createdSinceCatchUp.Capacity > MinimumSlack)
        {
            _createdSinceCatchUp.Capacity = MinimumSlack;
        }

        if (count > 0)
        {
            Add(SortedRun.Sort(positions, entries, count));
        }
    }

    /// <summary>
    /// One page from position <paramref name="from"/>: the stored keys in order until <paramref name="count"/> of them
    /// (expired or not, matching or not, as Redis counts) or ten times as many slots (removed keys included) have been
    /// visited, and then the rest of the last position's keys, so that the next cursor can start after it. The keys
    /// returned are those not expired at <paramref name="nowMs"/> that <paramref name="filter"/> accepts.
    /// </summary>
    public ScanPage ReadPage(long from, int count, long nowMs, KeyFilter? filter)
    {
        Span<int> next = stackalloc int[_runs.Count];
        for (var i = 0; i < _runs.Count; i++)
        {
            next[i] = _runs[i].FirstAtOrAfter(from);
        }

        var keys = new List<CacheReply>();
        var maxSlotsVisited = count * SlotsVisitedPerCount;
        long storedVisited = 0;
        long slotsVisited = 0;
        long lastPosition = 0;
        var pageFull = false;
        while (SmallestHead(next) is var runIndex && runIndex >= 0)
        {
            var run = _runs[runIndex];
            var position = run.Positions[next[runIndex]];
            var entry = run.Entries[next[runIndex]];
            var removed = entry.ScanPosition == ScanOrder.Removed;
            if (pageFull && position != lastPosition && (!removed || slotsVisited >= maxSlotsVisited))
            {
                return new ScanPage((ulong)lastPosition + 1, keys);
            }

            next[runIndex]++;
            slotsVisited++;
            if (pageFull && position != lastPosition)
            {
                // Removed keys past the page's end are skipped, not made its end: a replica without them (one restored
                // from a snapshot) ends the same page at the same place, and the last page says 0 rather than send the
                // caller back for nothing.
                continue;
            }

            if (!removed)
            {
                storedVisited++;
                if (!entry.IsExpiredAt(nowMs) && (filter is null || filter(entry.Key)))
                {
                    // Keys are never mutated once stored, so the reply may share them.
                    keys.Add(CacheReply.FromBulk(entry.Key));
                }
            }

            lastPosition = position;
            pageFull = storedVisited >= count || slotsVisited >= maxSlotsVisited;
        }

        return new ScanPage(0, keys);
    }

    private int SmallestHead(ReadOnlySpan<int> next)
    {
        var smallest = -1;
        for (var i = 0; i < _runs.Count; i++)
        {
            if (next[i] < _runs[i].Count
                && (smallest < 0 || _runs[i].CompareHeads(next[i], _runs[smallest], next[smallest]) < 0))
            {
                smallest = i;
            }
        }

        return smallest;
    }

    private bool IsWithinSlack() => _createdSinceCatchUp.Count + _removedSlots <= Math.Max(MinimumSlack, _slots / 2);

    private void Add(SortedRun run)
    {
        _runs.Add(run);
        _slots += run.Count;
        while (_runs.Count >= 2 && _runs[^1].Count * 2L >= _runs[^2].Count)
        {
            var merged = Merge(_runs[^2], _runs[^1]);
            _runs.RemoveAt(_runs.Count - 1);
            _runs[^1] = merged;
        }
    }

    /// <summary>
    /// Merges two runs into one. Only the position arrays are compared (keys only when positions tie), and removed keys
    /// are copied along rather than looked at: a merge then touches no entry, which on a large index is the difference
    /// between copying memory and chasing a pointer per key. The index is rebuilt before removed keys pile up.
    /// </summary>
    private static SortedRun Merge(SortedRun older, SortedRun newer)
    {
        var count = older.Count + newer.Count;
        var positions = new long[count];
        var entries = new CacheEntry[count];
        int fromOlder = 0, fromNewer = 0;
        for (var merged = 0; merged < count; merged++)
        {
            var takeOlder = fromNewer == newer.Count || (fromOlder < older.Count && older.CompareHeads(fromOlder, newer, fromNewer) <= 0);
            var (run, at) = takeOlder ? (older, fromOlder++) : (newer, fromNewer++);
            positions[merged] = run.Positions[at];
            entries[merged] = run.Entries[at];
        }

        return new SortedRun(positions, entries, count);
    }

    /// <summary>Entries with their positions, sorted by <see cref="ScanOrder"/>; positions apart so that searching them stays in cache.</summary>
    private sealed class SortedRun(long[] positions, CacheEntry[] entries, int count)
    {
        public long[] Positions { get; } = positions;

        public CacheEntry[] Entries { get; } = entries;

        public int Count { get; } = count;

        public static SortedRun Sort(long[] positions, CacheEntry[] entries, int count)
        {
            Array.Sort(positions, entries, 0, count);
            for (var start = 0; start < count;)
            {
                var end = start + 1;
                while (end < count && positions[end] == positions[start])
                {
                    end++;
                }

                if (end - start > 1)
                {
                    // Keys sharing a position (rare) go in byte order, so that every replica lists them alike.
                    Array.Sort(entries, start, end - start, KeyBytesOrder.Instance);
                }

                start = end;
            }

            return new SortedRun(positions, entries, count);
        }

        /// <summary>The index of the first entry at or after <paramref name="position"/>; <see cref="Count"/> when none is.</summary>
        public int FirstAtOrAfter(long position)
        {
            int low = 0, high = Count;
            while (low < high)
            {
                var middle = low + ((high - low) / 2);
                if (Positions[middle] < position)
                {
                    low = middle + 1;
                }
                else
                {
                    high = middle;
                }
            }

            return low;
        }

        /// <summary>Orders two entries by position, reading their keys only when the positions tie.</summary>
        public int CompareHeads(int at, SortedRun other, int otherAt)
        {
            var position = Positions[at];
            var otherPosition = other.Positions[otherAt];
            return position != otherPosition ? position.CompareTo(otherPosition) : Entries[at].Key.AsSpan().SequenceCompareTo(other.Entries[otherAt].Key);
        }
    }

    private sealed class KeyBytesOrder : IComparer<CacheEntry>
    {
        public static readonly KeyBytesOrder Instance = new();

        public int Compare(CacheEntry? x, CacheEntry? y) => x!.Key.AsSpan().SequenceCompareTo(y!.Key);
    }
}
