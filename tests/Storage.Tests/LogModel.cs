using Dcache.Raft;

namespace Dcache.Storage.Tests;

/// <summary>
/// What a Raft log should hold, by (index, term) only (payloads are a function of index and term in the crash
/// tests): the same rules as <see cref="MemoryStorage"/>, but cheap to copy, so the crash test can enumerate every
/// state a kill may leave behind.
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

    public ulong Commit { get; set; }

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
    };

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
        if ((hs.Term, hs.Vote, hs.Commit) != (Term, Vote, Commit))
        {
            return $"hard state {hs} != expected ({Term}, {Vote}, {Commit})";
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
