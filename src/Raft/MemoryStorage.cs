namespace Dcache.Raft;

/// <summary>
/// <see cref="IRaftStorage"/> held in memory: "durable" means stored in this object. Tests and the simulator use it
/// as a node's disk: a simulated crash keeps this object and discards the core.
/// </summary>
public sealed class MemoryStorage : IRaftStorage
{
    // _entries[0] is a placeholder at the compaction point: its index and term are those of FirstIndex - 1.
    private readonly List<Entry> _entries = [new Entry(0, 0, EntryType.Normal, ReadOnlyMemory<byte>.Empty)];
    private HardState _hardState;

    public MemoryStorage()
    {
    }

    /// <summary>A founding member's storage: the committed membership changes of <see cref="ClusterBootstrap.InitialLog"/>.</summary>
    public static MemoryStorage Bootstrap(Membership membership)
    {
        var storage = new MemoryStorage();
        var (hardState, entries) = ClusterBootstrap.InitialLog(membership);
        storage.Save(hardState, entries, null);
        return storage;
    }

    public SnapshotMetadata Snapshot { get; private set; } = SnapshotMetadata.Empty;

    public HardState HardState => _hardState;

    public ulong FirstIndex => _entries[0].Index + 1;

    public ulong LastIndex => _entries[0].Index + (ulong)_entries.Count - 1;

    public RaftInitialState InitialState() => new(_hardState, Snapshot);

    public LogReadStatus TryGetTerm(ulong index, out ulong term)
    {
        term = 0;
        var offset = _entries[0].Index;
        if (index < offset)
        {
            return LogReadStatus.Compacted;
        }

        if (index - offset >= (ulong)_entries.Count)
        {
            return LogReadStatus.Unavailable;
        }

        term = _entries[(int)(index - offset)].Term;
        return LogReadStatus.Ok;
    }

    public LogReadStatus TryGetEntries(ulong lo, ulong hi, ulong maxBytes, List<Entry> into)
    {
        var offset = _entries[0].Index;
        if (lo <= offset)
        {
            return LogReadStatus.Compacted;
        }

        if (hi > LastIndex + 1)
        {
            return LogReadStatus.Unavailable;
        }

        ulong size = 0;
        for (var i = lo; i < hi; i++)
        {
            var entry = _entries[(int)(i - offset)];
            size += entry.Size;
            if (size > maxBytes && i > lo)
            {
                break;
            }

            into.Add(entry);
        }

        return LogReadStatus.Ok;
    }

    public void Save(HardState? hardState, IReadOnlyList<Entry> entries, SnapshotMetadata? snapshot)
    {
        if (snapshot is not null)
        {
            ApplySnapshot(snapshot);
        }

        if (entries.Count > 0)
        {
            Append(entries);
        }

        if (hardState is { } hs)
        {
            _hardState = hs;
        }
    }

    public void CreateSnapshot(SnapshotMetadata snapshot, ulong compactTo)
    {
        if (snapshot.Index <= Snapshot.Index)
        {
            return;
        }

        if (snapshot.Index > LastIndex)
        {
            throw new InvalidOperationException($"snapshot index {snapshot.Index} is beyond the last index {LastIndex}");
        }

        Snapshot = snapshot;
        Compact(Math.Min(compactTo, snapshot.Index));
    }

    public void Dispose()
    {
    }

    private void ApplySnapshot(SnapshotMetadata snapshot)
    {
        if (snapshot.Index <= Snapshot.Index)
        {
            return;
        }

        // Keep the suffix only if it continues from the snapshot (same term at the snapshot's index).
        if (TryGetTerm(snapshot.Index, out var term) == LogReadStatus.Ok && term == snapshot.Term)
        {
            Compact(snapshot.Index);
        }
        else
        {
            _entries.Clear();
            _entries.Add(new Entry(snapshot.Index, snapshot.Term, EntryType.Normal, ReadOnlyMemory<byte>.Empty));
        }

        Snapshot = snapshot;
    }

    private void Compact(ulong index)
    {
        var offset = _entries[0].Index;
        if (index <= offset)
        {
            return;
        }

        if (index > LastIndex)
        {
            throw new InvalidOperationException($"cannot compact to {index}: last index is {LastIndex}");
        }

        var skip = (int)(index - offset);
        var boundary = _entries[skip];
        _entries.RemoveRange(0, skip);
        _entries[0] = new Entry(boundary.Index, boundary.Term, EntryType.Normal, ReadOnlyMemory<byte>.Empty);
    }

    private void Append(IReadOnlyList<Entry> entries)
    {
        var first = entries[0].Index;
        var offset = _entries[0].Index;
        if (first <= offset)
        {
            throw new InvalidOperationException($"append at {first} is at or before the compaction point {offset}");
        }

        if (first > LastIndex + 1)
        {
            throw new InvalidOperationException($"append at {first} leaves a gap after {LastIndex}");
        }

        // Supersede rule: entries at and after the first appended index are replaced.
        var keep = (int)(first - offset);
        _entries.RemoveRange(keep, _entries.Count - keep);
        for (var i = 0; i < entries.Count; i++)
        {
            _entries.Add(entries[i]);
        }
    }
}
