using Dcache.Raft;

namespace Dcache.Storage.Tests;

/// <summary>
/// What a Raft log should hold, by (index, term) only (payloads are a function of index and term in the crash
/// tests): the same rules as <see cref="MemoryStorage"/>, but cheap to copy, so the crash test can enumerate every
/// state a kill may leave behind. The commit index is a range: a commit index saved alone may be lost in a crash
/// (IRaftStorage.Save), so a reopened log may hold any commit from <see cref="DurableCommit"/> to <see cref="Commit"/>.
/// </summary>
internal sealed class LogModel
{
    private List<(ulong Term, EntryType Type)> _entries = [];

    public ulong CompactIndex { get; private set; }

    public ulong CompactTerm { get; private set; }

    public ulong SnapshotIndex { get; private set; }

    public ulong SnapshotTerm { get; private set; }

    public ulong Term { get; set; }

    public ulong Vote { get; set; }

    /// <summary>The newest commit index written.</summary>
    public ulong Commit { get; set; }

    /// <summary>The lowest commit index a reopened log may hold: as of the last save that synced the log (entries, a snapshot, or a commit of a membership change).</summary>
    public ulong DurableCommit { get; set; }

    /// <summary>The commit index as of the last save of entries or a snapshot: below <see cref="DurableCommit"/> when a membership commit alone raised that.</summary>
    public ulong SyncedCommit { get; set; }

    public ulong FirstIndex => CompactIndex + 1;

    public ulong LastIndex => CompactIndex + (ulong)_entries.Count;

    public LogModel Copy() => new()
    {
        _entries = [.. _entries],
        CompactIndex = CompactIndex,
        CompactTerm = CompactTerm,
        SnapshotIndex = SnapshotIndex,
        SnapshotTerm = SnapshotTerm,
        Term = Term,
        Vote = Vote,
        Commit = Commit,
        DurableCommit = DurableCommit,
        SyncedCommit = SyncedCommit,
    };

    /// <summary>The log is synced up to here (by entries or a snapshot): every commit index written so far is durable.</summary>
    public void Synced() => DurableCommit = SyncedCommit = Commit;

    /// <summary>After a reopen the commit index found is the one on disk.</summary>
    public void Reopened(ulong commit) => Commit = DurableCommit = SyncedCommit = commit;

    /// <summary>True when an entry in (<paramref name="from"/>, <paramref name="to"/>] still in the log changes the membership (as FasterRaftStorage decides it).</summary>
    public bool CommitsConfChange(ulong from, ulong to)
    {
        for (var index = Math.Max(from, CompactIndex) + 1; index <= Math.Min(to, LastIndex); index++)
        {
            if (_entries[(int)(index - CompactIndex - 1)].Type == EntryType.ConfChange)
            {
                return true;
            }
        }

        return false;
    }

    public ulong TermAt(ulong index) => index == CompactIndex ? CompactTerm : _entries[(int)(index - CompactIndex - 1)].Term;

    public void Append(ulong start, IEnumerable<(ulong Term, EntryType Type)> entries)
    {
        _entries.RemoveRange((int)(start - CompactIndex - 1), (int)(LastIndex - start + 1));
        _entries.AddRange(entries);
    }

    public void CreateSnapshot(ulong index, ulong term, ulong compactTo)
    {
        if (index <= SnapshotIndex)
        {
            return;
        }

        (SnapshotIndex, SnapshotTerm) = (index, term);
        Compact(Math.Min(index, compactTo));
    }

    public void InstallSnapshot(ulong index, ulong term)
    {
        if (index <= SnapshotIndex)
        {
            return;
        }

        if (index >= CompactIndex && index <= LastIndex && TermAt(index) == term)
        {
            Compact(index);
        }
        else
        {
            _entries.Clear();
            (CompactIndex, CompactTerm) = (index, term);
        }

        (SnapshotIndex, SnapshotTerm) = (index, term);
    }

    /// <summary>Null when <paramref name="storage"/> holds exactly this state, else the first difference.</summary>
    public string? Difference(FasterRaftStorage storage, Func<ulong, ulong, byte[]> payload)
    {
        var hs = storage.HardState;
        if ((hs.Term, hs.Vote) != (Term, Vote) || hs.Commit < DurableCommit || hs.Commit > Commit)
        {
            return DurableCommit == Commit
                ? $"hard state {hs} != expected ({Term}, {Vote}, {Commit})"
                : $"hard state {hs} != expected ({Term}, {Vote}, {DurableCommit}..{Commit})";
        }

        if ((storage.FirstIndex, storage.LastIndex) != (FirstIndex, LastIndex))
        {
            return $"log [{storage.FirstIndex}, {storage.LastIndex}] != expected [{FirstIndex}, {LastIndex}]";
        }

        if ((storage.Snapshot.Index, storage.Snapshot.Term) != (SnapshotIndex, SnapshotTerm))
        {
            return $"snapshot {storage.Snapshot.Index}/{storage.Snapshot.Term} != expected {SnapshotIndex}/{SnapshotTerm}";
        }

        if (storage.TryGetTerm(CompactIndex, out var compactTerm) != LogReadStatus.Ok || compactTerm != CompactTerm)
        {
            return $"term at the compaction point {CompactIndex} is {compactTerm}, expected {CompactTerm}";
        }

        if (LastIndex >= FirstIndex)
        {
            var read = new List<Entry>();
            if (storage.TryGetEntries(FirstIndex, LastIndex + 1, ulong.MaxValue, read) != LogReadStatus.Ok)
            {
                return "entries could not be read";
            }

            for (var i = 0; i < read.Count; i++)
            {
                var (term, type) = _entries[i];
                var entry = read[i];
                if (entry.Index != FirstIndex + (ulong)i || entry.Term != term || entry.Type != type)
                {
                    return $"entry {entry} != expected {FirstIndex + (ulong)i}/{term}:{type}";
                }

                if (!entry.Data.Span.SequenceEqual(payload(entry.Index, entry.Term)))
                {
                    return $"payload of entry {entry} differs";
                }
            }
        }

        return null;
    }

    private void Compact(ulong index)
    {
        if (index <= CompactIndex)
        {
            return;
        }

        CompactTerm = TermAt(index);
        _entries.RemoveRange(0, (int)(index - CompactIndex));
        CompactIndex = index;
    }
}
