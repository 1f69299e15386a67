using Dcache.Raft;

namespace Dcache.Storage;

/// <summary>Where one retained entry lives: its term and type, its log address, and its payload while cached.</summary>
internal struct LogSlot
{
    public ulong Term;
    public long Address;
    public int RecordLength;
    public EntryType Type;
    public bool Cached;
    public ReadOnlyMemory<byte> Data;
}

/// <summary>
/// The in-memory view of the Raft log: the compaction point, one slot per retained entry (index -> address),
/// the snapshot and the commit index. The live write path and replay on open apply the same operations, so the
/// log read back after a restart is the one that was written. Mirrors <see cref="MemoryStorage"/>'s rules.
/// </summary>
internal sealed class RaftLogState(ReplayBase start, long cacheBudgetBytes)
{
    private readonly List<LogSlot> _slots = [];
    // Slots below _cachedFrom hold no payload; eviction walks up from here, oldest first.
    private ulong _cachedFrom = start.CompactIndex + 1;
    private long _cachedBytes;

    public ulong CompactIndex { get; private set; } = start.CompactIndex;

    public ulong CompactTerm { get; private set; } = start.CompactTerm;

    public SnapshotMetadata Snapshot { get; set; } = start.Snapshot;

    public ulong Commit { get; set; } = start.Commit;

    public ulong FirstIndex => CompactIndex + 1;

    public ulong LastIndex => CompactIndex + (ulong)_slots.Count;

    public int Count => _slots.Count;

    public ReplayBase ToReplayBase() => new(CompactIndex, CompactTerm, Snapshot, Commit);

    public ref LogSlot SlotAt(ulong index) => ref System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_slots)[(int)(index - CompactIndex - 1)];

    public LogReadStatus TryGetTerm(ulong index, out ulong term)
    {
        term = 0;
        if (index < CompactIndex)
        {
            return LogReadStatus.Compacted;
        }

        if (index > LastIndex)
        {
            return LogReadStatus.Unavailable;
        }

        term = index == CompactIndex ? CompactTerm : SlotAt(index).Term;
        return LogReadStatus.Ok;
    }

    /// <summary>Where an append may start: after the compaction point, without a gap. Throws like MemoryStorage.</summary>
    public void CheckAppend(ulong first, ulong compactIndex, ulong lastIndex)
    {
        if (first <= compactIndex)
        {
            throw new InvalidOperationException($"append at {first} is at or before the compaction point {compactIndex}");
        }

        if (first > lastIndex + 1)
        {
            throw new InvalidOperationException($"append at {first} leaves a gap after {lastIndex}");
        }
    }

    /// <summary>The compaction point and last index after <see cref="ApplySnapshot"/> of <paramref name="snapshot"/>, without applying it.</summary>
    public (ulong CompactIndex, ulong LastIndex) PreviewSnapshot(SnapshotMetadata snapshot)
    {
        if (snapshot.Index <= Snapshot.Index)
        {
            return (CompactIndex, LastIndex);
        }

        return TryGetTerm(snapshot.Index, out var term) == LogReadStatus.Ok && term == snapshot.Term
            ? (Math.Max(CompactIndex, snapshot.Index), LastIndex)
            : (snapshot.Index, snapshot.Index);
    }

    /// <summary>A snapshot received from the leader: keep the suffix only if it continues from the snapshot. False if older than ours.</summary>
    public bool ApplySnapshot(SnapshotMetadata snapshot)
    {
        if (snapshot.Index <= Snapshot.Index)
        {
            return false;
        }

        if (TryGetTerm(snapshot.Index, out var term) == LogReadStatus.Ok && term == snapshot.Term)
        {
            Compact(snapshot.Index);
        }
        else
        {
            TruncateFrom(CompactIndex + 1);
            CompactIndex = snapshot.Index;
            CompactTerm = snapshot.Term;
            _cachedFrom = CompactIndex + 1;
        }

        Snapshot = snapshot;
        return true;
    }

    /// <summary>A snapshot taken locally. False if older than ours.</summary>
    public bool CreateSnapshot(SnapshotMetadata snapshot, ulong compactTo)
    {
        if (snapshot.Index <= Snapshot.Index)
        {
            return false;
        }

        if (snapshot.Index > LastIndex)
        {
            throw new InvalidOperationException($"snapshot index {snapshot.Index} is beyond the last index {LastIndex}");
        }

        Snapshot = snapshot;
        Compact(Math.Min(compactTo, snapshot.Index));
        return true;
    }

    public void Compact(ulong index)
    {
        if (index <= CompactIndex)
        {
            return;
        }

        if (index > LastIndex)
        {
            throw new InvalidOperationException($"cannot compact to {index}: last index is {LastIndex}");
        }

        var boundaryTerm = SlotAt(index).Term;
        var remove = (int)(index - CompactIndex);
        for (var i = 0; i < remove; i++)
        {
            if (_slots[i].Cached)
            {
                _cachedBytes -= _slots[i].Data.Length;
            }
        }

        _slots.RemoveRange(0, remove);
        CompactIndex = index;
        CompactTerm = boundaryTerm;
        _cachedFrom = Math.Max(_cachedFrom, CompactIndex + 1);
    }

    /// <summary>The supersede rule: drops every entry at or after <paramref name="index"/>.</summary>
    public void TruncateFrom(ulong index)
    {
        if (index > LastIndex)
        {
            return;
        }

        var keep = (int)(index - CompactIndex - 1);
        for (var i = keep; i < _slots.Count; i++)
        {
            if (_slots[i].Cached)
            {
                _cachedBytes -= _slots[i].Data.Length;
            }
        }

        _slots.RemoveRange(keep, _slots.Count - keep);
        _cachedFrom = Math.Min(_cachedFrom, index);
    }

    /// <summary>Appends the entry at LastIndex + 1 (the caller has applied the supersede rule), caching its payload if given.</summary>
    public void Add(ulong term, EntryType type, long address, int recordLength, ReadOnlyMemory<byte>? data)
    {
        var slot = new LogSlot { Term = term, Type = type, Address = address, RecordLength = recordLength };
        if (data is { } payload)
        {
            slot.Cached = true;
            slot.Data = payload;
            _cachedBytes += payload.Length;
        }

        _slots.Add(slot);
        EvictBeyondBudget();
    }

    /// <summary>The address of the first retained entry, or null when no entry is retained.</summary>
    public long? FirstAddress => _slots.Count > 0 ? _slots[0].Address : null;

    private void EvictBeyondBudget()
    {
        while (_cachedBytes > cacheBudgetBytes && _cachedFrom <= LastIndex)
        {
            ref var slot = ref SlotAt(_cachedFrom);
            if (slot.Cached)
            {
                _cachedBytes -= slot.Data.Length;
                slot.Cached = false;
                slot.Data = default;
            }

            _cachedFrom++;
        }
    }
}
