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
/// <para>None of the work that grows with the cache happens in one call: <see cref="Work"/> does a slice of it (a build
/// walks the keys of its instant, <see cref="WriteOrderWalk"/>, and each slice's keys become a sorted run; a catch-up
/// places created keys the same way; a merge copies a bounded number of slots, and replaces its two runs only when
/// done, so reads go on using them meanwhile). A read may be served once every key stored when it arrived is placed
/// (<see cref="IsCurrentFor"/>): keys created later may or may not be found, as SCAN allows.</para>
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

    /// <summary>
    /// Slots a merge copies for each key a step may place: a merge reads two position arrays in order and writes two, far
    /// cheaper per slot than placing a key (following a pointer to it and hashing its bytes).
    /// </summary>
    public const int MergeSlotsPerKey = 4;

    /// <summary>Redis's bound on a call's work when most of what it visits yields nothing (its maxiterations).</summary>
    private const long SlotsVisitedPerCount = 10;

    private readonly List<SortedRun> _runs = [];
    private readonly Action<WriteOrderWalk> _endWalk;
    private List<CacheEntry> _createdSinceCatchUp = [];
    // The walk that fills a new index, a slice at a time, until it has yielded every key stored when it began.
    private WriteOrderWalk? _build;
    private WriteOrderWalk.Visitor? _placeFromBuild;
    // Created keys being placed, a slice at a time, and how many creations they cover once placed.
    private List<CacheEntry>? _placing;
    private int _placingAt;
    private long _placingCovers;
    private long _createdNoted;
    private long _createdPlaced;
    private long _catchUpWanted;
    private RunMerge? _merge;
    private long[] _batchPositions = [];
    private CacheEntry[] _batchEntries = [];
    private int _batchCount;
    private long _slots;
    private long _removedSlots;
    private long _removedBytes;

    private ScanIndex(Action<WriteOrderWalk> endWalk)
    {
        _endWalk = endWalk;
    }

    /// <summary>The number of sorted runs: at most log2(keys) + 1 once merges have caught up.</summary>
    public int RunCount => _runs.Count;

    /// <summary>Slots in the runs: keys placed, removed ones included until a rebuild.</summary>
    public long Slots => _slots;

    /// <summary>True while the index still has keys to place or runs to merge (<see cref="Work"/> does it).</summary>
    public bool HasWork => _build is not null || _placing is not null || _merge is not null || _createdPlaced < _catchUpWanted || MergeNeeded() >= 0;

    /// <summary>
    /// Starts an index of the keys <paramref name="walk"/> goes over (every key stored when it began); <see cref="Work"/>
    /// places them a slice at a time, in O(n log n) in all. <paramref name="endWalk"/> is called once the walk is done
    /// with, so that the machine stops telling it about writes.
    /// </summary>
    public static ScanIndex Begin(WriteOrderWalk walk, Action<WriteOrderWalk> endWalk)
    {
        var index = new ScanIndex(endWalk) { _build = walk };
        index._placeFromBuild = index.PlaceFromBuild;
        return index;
    }

    /// <summary>Indexes the <paramref name="keyCount"/> keys of the write-order list that starts at <paramref name="oldestWritten"/> at once (tests).</summary>
    public static ScanIndex Build(CacheEntry? oldestWritten, int keyCount)
    {
        var index = Begin(new WriteOrderWalk(oldestWritten, long.MaxValue, keyCount), _ => { });
        while (index.HasWork)
        {
            index.Work(int.MaxValue);
        }

        return index;
    }

    /// <summary>A mark for a read arriving now: it may be served once <see cref="IsCurrentFor"/> that mark.</summary>
    public long ReadMark => _createdNoted;

    /// <summary>
    /// True when every key stored when the read with <paramref name="mark"/> arrived has its place in the runs, so that a
    /// page misses none of them; keys created since may or may not be found, as SCAN allows.
    /// </summary>
    public bool IsCurrentFor(long mark) => _build is null && _createdPlaced >= mark;

    /// <summary>Asks <see cref="Work"/> to place the keys created before the read with <paramref name="mark"/> arrived.</summary>
    public void RequestCatchUp(long mark) => _catchUpWanted = Math.Max(_catchUpWanted, mark);

    /// <summary>Notes a key the cache just created. False when the index has fallen too far behind and should be dropped.</summary>
    public bool NoteCreated(CacheEntry entry)
    {
        _createdSinceCatchUp.Add(entry);
        _createdNoted++;
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
            // Placed, so in one of the runs (every stored key was placed by this index's build or a catch-up). While a
            // build is in progress the position may be one an earlier index left on a key the build will skip: the count
            // is then a little high, which only brings the next rebuild a little nearer.
            _removedSlots++;
        }

        // Held until the index is dropped (in a run) or catches up (in the created list): counted either way.
        _removedBytes += entry.ChargedBytes;
        entry.ScanPosition = ScanOrder.Removed;
        return IsWithinSlack() && _removedBytes <= Math.Max(MinimumRetainedBytes, cacheUsedBytes / 8);
    }

    /// <summary>The machine dropped this index: its walk, if still going, needs no more notes.</summary>
    public void Abandon()
    {
        if (_build is not null)
        {
            _endWalk(_build);
            _build = null;
        }
    }

    /// <summary>
    /// Does a bounded slice of the pending work: places at most <paramref name="maxKeys"/> keys (from the build's walk,
    /// or created keys a read waits for: each slice's keys become a sorted run) and copies at most
    /// <see cref="MergeSlotsPerKey"/> times as many slots of a merge. Reads may be served between slices (from the runs
    /// as they are: a merge in progress replaces its two runs only once done). True while work remains.
    /// </summary>
    public bool Work(int maxKeys)
    {
        if (_build is null && _placing is null && _createdPlaced >= _catchUpWanted)
        {
            // Merges wait while a read waits for keys to be placed: it is answered sooner, from more runs.
            Merge(maxKeys <= int.MaxValue / MergeSlotsPerKey ? maxKeys * MergeSlotsPerKey : int.MaxValue);
            return HasWork;
        }

        if (_build is not null)
        {
            _build.Step(maxKeys, _placeFromBuild!);
            AddBatch();
            if (_build.IsDone)
            {
                _endWalk(_build);
                _build = null;
            }
        }
        else
        {
            PlaceCreated(maxKeys);
        }

        return HasWork;
    }

    private void Merge(int maxSlots)
    {
        if (_merge is null && MergeNeeded() is var pair and >= 0)
        {
            _merge = new RunMerge(_runs[pair], _runs[pair + 1]);
        }

        if (_merge is not null && _merge.Step(maxSlots))
        {
            var older = _runs.IndexOf(_merge.Older);
            _runs[older] = _merge.Result();
            _runs.RemoveAt(older + 1);
            _merge = null;
        }
    }

    private void PlaceFromBuild(CacheEntry entry, ReadOnlyMemory<byte> value, long expireAtMs, ulong revision)
    {
        if (entry.ScanPosition != ScanOrder.Removed)
        {
            AddToBatch(entry);
        }
    }

    /// <summary>Places up to <paramref name="maxKeys"/> of the keys created since the last catch-up, if a read waits for them.</summary>
    private void PlaceCreated(int maxKeys)
    {
        if (_placing is null)
        {
            if (_createdPlaced >= _catchUpWanted || _createdSinceCatchUp.Count == 0)
            {
                return;
            }

            _placing = _createdSinceCatchUp;
            _placingAt = 0;
            _placingCovers = _createdNoted;
            _createdSinceCatchUp = [];
        }

        var end = (int)Math.Min(_placing.Count, (long)_placingAt + maxKeys);
        for (; _placingAt < end; _placingAt++)
        {
            var entry = _placing[_placingAt];
            if (entry.ScanPosition != ScanOrder.Removed)
            {
                AddToBatch(entry);
            }
        }

        AddBatch();
        if (_placingAt == _placing.Count)
        {
            _placing = null;
            _createdPlaced = _placingCovers;
        }
    }

    private void AddToBatch(CacheEntry entry)
    {
        if (_batchCount == _batchPositions.Length)
        {
            var size = Math.Max(16, _batchCount * 2);
            Array.Resize(ref _batchPositions, size);
            Array.Resize(ref _batchEntries, size);
        }

        _batchPositions[_batchCount] = ScanOrder.Place(entry);
        _batchEntries[_batchCount++] = entry;
    }

    /// <summary>The keys placed by this slice become a sorted run of their own; merges fold it in later.</summary>
    private void AddBatch()
    {
        if (_batchCount == 0)
        {
            return;
        }

        var run = SortedRun.Sort(_batchPositions.AsSpan(0, _batchCount).ToArray(), _batchEntries.AsSpan(0, _batchCount).ToArray(), _batchCount);
        Array.Clear(_batchEntries, 0, _batchCount);
        _batchCount = 0;
        _runs.Add(run);
        _slots += run.Count;
    }

    /// <summary>
    /// The older run of the pair to merge next, or -1: runs stay each more than twice the size of the next (so at most
    /// log2(n) + 1 of them, and a key is merged O(log n) times in its life). Of the pairs that break that, the smallest
    /// goes first: runs added while merges waited (a build adds one per slice) are then merged pairwise, as a merge sort
    /// does, rather than one at a time into an ever larger run, which would copy O(n) slots per run added.
    /// </summary>
    private int MergeNeeded()
    {
        var best = -1;
        for (var i = _runs.Count - 2; i >= 0; i--)
        {
            if (_runs[i + 1].Count * 2L >= _runs[i].Count
                && (best < 0 || (long)_runs[i].Count + _runs[i + 1].Count < (long)_runs[best].Count + _runs[best + 1].Count))
            {
                best = i;
            }
        }

        return best;
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
                // from a snapshot) ends the same page at the same place unless the work bound ended it (removed keys
                // take slots), and the last page says 0 rather than send the caller back for nothing.
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

    private bool IsWithinSlack()
    {
        // While a build runs, its walk's keys count as placed: the index will hold them all.
        var size = _build is null ? _slots : Math.Max(_slots, _build.KeyCount);
        return _createdSinceCatchUp.Count + (_placing?.Count ?? 0) + _removedSlots <= Math.Max(MinimumSlack, size / 2);
    }

    /// <summary>
    /// Merges two adjacent runs into one, a slice at a time. Only the position arrays are compared (keys only when
    /// positions tie), and removed keys are copied along rather than looked at: a merge then touches no entry, which on
    /// a large index is the difference between copying memory and chasing a pointer per key. The index is rebuilt
    /// before removed keys pile up. The two runs are never changed, so reads go on using them until the merge is done.
    /// </summary>
    private sealed class RunMerge(SortedRun older, SortedRun newer)
    {
        // Not zeroed: every slot is written before the run is used, and zeroing a large one would take a round of its own.
        private readonly long[] _positions = GC.AllocateUninitializedArray<long>(older.Count + newer.Count);
        private readonly CacheEntry[] _entries = new CacheEntry[older.Count + newer.Count];
        private int _fromOlder;
        private int _fromNewer;
        private int _merged;

        public SortedRun Older => older;

        /// <summary>Copies up to <paramref name="maxSlots"/> slots; true when the merge is complete.</summary>
        public bool Step(int maxSlots)
        {
            var end = (int)Math.Min(_positions.Length, (long)_merged + maxSlots);
            for (; _merged < end; _merged++)
            {
                var takeOlder = _fromNewer == newer.Count || (_fromOlder < older.Count && older.CompareHeads(_fromOlder, newer, _fromNewer) <= 0);
                var (run, at) = takeOlder ? (older, _fromOlder++) : (newer, _fromNewer++);
                _positions[_merged] = run.Positions[at];
                _entries[_merged] = run.Entries[at];
            }

            return _merged == _positions.Length;
        }

        public SortedRun Result() => new(_positions, _entries, _positions.Length);
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
            return position != otherPosition ? position.CompareTo(otherPosition) : KeyBytesOrder.Compare(Entries[at].Key, other.Entries[otherAt].Key);
        }
    }
}
