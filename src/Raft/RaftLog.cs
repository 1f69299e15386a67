namespace Dcache.Raft;

/// <summary>
/// The log as the core sees it: what storage holds durably, plus the unstable tail (entries and possibly a snapshot
/// received from the leader) that has not been handed out and confirmed persisted yet.
/// </summary>
internal sealed class RaftLog
{
    private readonly IRaftLogReader _storage;
    private readonly List<Entry> _scratch = [];
    // Slices are gathered here, then copied into an array of their exact size: a List grown entry by entry would
    // leave its outgrown arrays behind on every Append message and every Ready.
    private readonly List<Entry> _slice = [];
    private readonly Entry[] _one = new Entry[1];

    // Unstable tail: entries from _unstableOffset on, not yet confirmed durable. Entries at and after the offset
    // that storage may still hold are stale and superseded by these.
    private readonly List<Entry> _unstable = [];
    private ulong _unstableOffset;

    public RaftLog(IRaftLogReader storage, ulong committed, ulong applied)
    {
        _storage = storage;
        _unstableOffset = storage.LastIndex + 1;
        Committed = committed;
        Applied = applied;
    }

    public ulong Committed { get; private set; }

    public ulong Applied { get; private set; }

    /// <summary>A snapshot received from the leader that is not yet confirmed persisted.</summary>
    public SnapshotMetadata? UnstableSnapshot { get; private set; }

    public SnapshotMetadata Snapshot => UnstableSnapshot ?? _storage.Snapshot;

    public ulong FirstIndex => UnstableSnapshot is { } s ? s.Index + 1 : _storage.FirstIndex;

    public ulong LastIndex =>
        _unstable.Count > 0 ? _unstableOffset + (ulong)_unstable.Count - 1
        : UnstableSnapshot is { } s ? s.Index
        : _unstableOffset - 1;

    public ulong LastTerm => TermOrZero(LastIndex);

    public bool HasUnstableEntries => _unstable.Count > 0;

    /// <summary>
    /// The last index of the log that is durable and not superseded by the unstable tail or an unstable snapshot: what
    /// the Readies handed out and advanced so far made durable.
    /// </summary>
    public ulong DurableLastIndex => UnstableSnapshot is not null ? 0 : Math.Min(_unstableOffset - 1, _storage.LastIndex);

    public LogReadStatus TryTerm(ulong index, out ulong term)
    {
        term = 0;
        if (index + 1 < FirstIndex)
        {
            return LogReadStatus.Compacted;
        }

        if (index > LastIndex)
        {
            return LogReadStatus.Unavailable;
        }

        if (index >= _unstableOffset)
        {
            term = _unstable[(int)(index - _unstableOffset)].Term;
            return LogReadStatus.Ok;
        }

        if (UnstableSnapshot is { } snapshot && index == snapshot.Index)
        {
            term = snapshot.Term;
            return LogReadStatus.Ok;
        }

        return _storage.TryGetTerm(index, out term);
    }

    public ulong TermOrZero(ulong index) => TryTerm(index, out var term) == LogReadStatus.Ok ? term : 0;

    public bool MatchTerm(ulong index, ulong term) => TryTerm(index, out var t) == LogReadStatus.Ok && t == term;

    /// <summary>Election restriction: a candidate's log is at least as up to date as ours.</summary>
    public bool IsUpToDate(ulong lastIndex, ulong lastTerm) =>
        lastTerm > LastTerm || (lastTerm == LastTerm && lastIndex >= LastIndex);

    /// <summary>
    /// Follower side of Append: if our log matches the leader's at (index, logTerm), append what conflicts or is new
    /// (never truncating entries that already match: a stale or reordered Append must not cut acknowledged entries).
    /// </summary>
    public bool TryAppend(ulong index, ulong logTerm, ulong leaderCommit, IReadOnlyList<Entry> entries, out ulong lastNewIndex, out bool appended)
    {
        lastNewIndex = 0;
        appended = false;
        if (!MatchTerm(index, logTerm))
        {
            return false;
        }

        lastNewIndex = index + (ulong)entries.Count;
        var conflict = FindConflict(entries);
        if (conflict != 0)
        {
            if (conflict <= Committed)
            {
                throw new InvalidOperationException($"entry {conflict} conflicts with the committed prefix (commit {Committed})");
            }

            var from = (int)(conflict - (index + 1));
            TruncateAndAppend(entries, from);
            appended = true;
        }

        CommitTo(Math.Min(leaderCommit, lastNewIndex));
        return true;
    }

    /// <summary>The index of the first entry that is new or differs in term from ours; 0 when all match.</summary>
    private ulong FindConflict(IReadOnlyList<Entry> entries)
    {
        foreach (var entry in entries)
        {
            if (!MatchTerm(entry.Index, entry.Term))
            {
                return entry.Index;
            }
        }

        return 0;
    }

    /// <summary>The largest index &lt;= <paramref name="index"/> whose term is &lt;= <paramref name="term"/>: where two logs can still agree.</summary>
    public ulong FindConflictByTerm(ulong index, ulong term)
    {
        if (index > LastIndex)
        {
            return index;
        }

        while (index > 0)
        {
            if (TryTerm(index, out var t) != LogReadStatus.Ok || t <= term)
            {
                break;
            }

            index--;
        }

        return index;
    }

    /// <summary>Leader side: appends an entry whose index follows the last one.</summary>
    public void Append(Entry entry)
    {
        // TruncateAndAppend copies what it is given, so one array serves every proposal.
        _one[0] = entry;
        Append(_one);
        _one[0] = default;
    }

    /// <summary>Leader side: appends entries whose indexes follow the last one.</summary>
    public void Append(IReadOnlyList<Entry> entries)
    {
        if (entries.Count == 0)
        {
            return;
        }

        if (entries[0].Index <= Committed)
        {
            throw new InvalidOperationException($"append at {entries[0].Index} is at or before the commit index {Committed}");
        }

        TruncateAndAppend(entries, 0);
    }

    private void TruncateAndAppend(IReadOnlyList<Entry> entries, int from)
    {
        var after = entries[from].Index;
        var end = _unstableOffset + (ulong)_unstable.Count;
        if (after == end)
        {
            // Plain append to the unstable tail.
        }
        else if (after <= _unstableOffset)
        {
            // Replaces the whole unstable tail and possibly stable entries: storage supersedes them on the next save.
            _unstableOffset = after;
            _unstable.Clear();
        }
        else if (after < end)
        {
            _unstable.RemoveRange((int)(after - _unstableOffset), (int)(end - after));
        }
        else
        {
            throw new InvalidOperationException($"append at {after} leaves a gap after {end - 1}");
        }

        for (var i = from; i < entries.Count; i++)
        {
            _unstable.Add(entries[i]);
        }
    }

    public void CommitTo(ulong index)
    {
        if (index <= Committed)
        {
            return;
        }

        if (index > LastIndex)
        {
            // Only a log that lost entries this node had acknowledged gets here (etcd panics alike): say what to do.
            throw new InvalidOperationException(
                $"commit index {index} is beyond the last index {LastIndex}: this node's log lost entries it had acknowledged "
                + "(a wiped or replaced data directory started under its old node id, or a truncated log). Do not start it with this data "
                + "again: remove the node from the cluster and add it back under a new id, with an empty data directory and Join=true");
        }

        Committed = index;
    }

    public void AppliedTo(ulong index)
    {
        if (index == 0)
        {
            return;
        }

        if (index > Committed || index < Applied)
        {
            throw new InvalidOperationException($"applied index {index} is outside [{Applied}, {Committed}]");
        }

        Applied = index;
    }

    /// <summary>The entries handed out by a Ready up to (index, term) are durable now.</summary>
    public void StableTo(ulong index, ulong term)
    {
        if (index < _unstableOffset || index >= _unstableOffset + (ulong)_unstable.Count)
        {
            return;
        }

        // If the tail was replaced since the Ready was handed out, the term differs: keep the newer entries unstable.
        if (_unstable[(int)(index - _unstableOffset)].Term != term)
        {
            return;
        }

        var count = (int)(index - _unstableOffset + 1);
        _unstable.RemoveRange(0, count);
        _unstableOffset = index + 1;
    }

    public void StableSnapshotTo(ulong index)
    {
        if (UnstableSnapshot is { } s && s.Index == index)
        {
            UnstableSnapshot = null;
        }
    }

    /// <summary>Replaces the whole log with a snapshot received from the leader.</summary>
    public void Restore(SnapshotMetadata snapshot)
    {
        Committed = snapshot.Index;
        UnstableSnapshot = snapshot;
        _unstable.Clear();
        _unstableOffset = snapshot.Index + 1;
    }

    public IReadOnlyList<Entry> UnstableEntries() => _unstable.Count == 0 ? [] : _unstable.ToArray();

    public bool HasNextCommittedEntries => Committed > Math.Max(Applied, FirstIndex - 1);

    public IReadOnlyList<Entry> NextCommittedEntries(ulong maxBytes)
    {
        var lo = Math.Max(Applied + 1, FirstIndex);
        if (Committed < lo)
        {
            return [];
        }

        var status = Slice(lo, Committed + 1, maxBytes, out var entries);
        if (status != LogReadStatus.Ok)
        {
            throw new InvalidOperationException($"committed entries [{lo}, {Committed}] are unreadable: {status}");
        }

        return entries;
    }

    /// <summary>As <see cref="Slice(ulong, ulong, ulong, List{Entry})"/>, into an array of its own (empty unless Ok).</summary>
    public LogReadStatus Slice(ulong lo, ulong hi, ulong maxBytes, out Entry[] entries)
    {
        _slice.Clear();
        var status = Slice(lo, hi, maxBytes, _slice);
        entries = status == LogReadStatus.Ok && _slice.Count > 0 ? _slice.ToArray() : [];
        _slice.Clear(); // the entries' payloads are not kept alive by the scratch list
        return status;
    }

    /// <summary>Entries [lo, hi) up to maxBytes (at least one), from storage and the unstable tail.</summary>
    public LogReadStatus Slice(ulong lo, ulong hi, ulong maxBytes, List<Entry> into)
    {
        if (lo >= hi)
        {
            return LogReadStatus.Ok;
        }

        if (lo < FirstIndex)
        {
            return LogReadStatus.Compacted;
        }

        if (hi > LastIndex + 1)
        {
            return LogReadStatus.Unavailable;
        }

        var start = into.Count;
        ulong size = 0;
        if (lo < _unstableOffset)
        {
            _scratch.Clear();
            var status = _storage.TryGetEntries(lo, Math.Min(hi, _unstableOffset), maxBytes, _scratch);
            if (status != LogReadStatus.Ok)
            {
                return status;
            }

            foreach (var entry in _scratch)
            {
                size += entry.Size;
                into.Add(entry);
            }

            if ((ulong)_scratch.Count < Math.Min(hi, _unstableOffset) - lo)
            {
                return LogReadStatus.Ok; // size limit reached inside the stable part
            }
        }

        for (var i = Math.Max(lo, _unstableOffset); i < hi; i++)
        {
            var entry = _unstable[(int)(i - _unstableOffset)];
            size += entry.Size;
            if (size > maxBytes && into.Count > start)
            {
                break;
            }

            into.Add(entry);
        }

        return LogReadStatus.Ok;
    }
}
