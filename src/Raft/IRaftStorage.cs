namespace Dcache.Raft;

public enum LogReadStatus : byte
{
    Ok = 0,
    /// <summary>The index lies before the first retained entry: it is covered by the snapshot.</summary>
    Compacted,
    /// <summary>The index lies after the last stored entry.</summary>
    Unavailable,
}

/// <summary>The state a node starts from: persisted hard state and the membership of its latest snapshot.</summary>
public readonly record struct RaftInitialState(HardState HardState, SnapshotMetadata Snapshot);

/// <summary>
/// The durable Raft state as the core reads it. The core never writes: the host writes through
/// <see cref="IRaftStorage"/> while processing a <see cref="Ready"/>. Entries retained are
/// [FirstIndex, LastIndex]; the term of FirstIndex - 1 (the compaction point) is always readable, and
/// FirstIndex - 1 &lt;= Snapshot.Index, so the snapshot covers everything compacted away.
/// </summary>
public interface IRaftLogReader
{
    RaftInitialState InitialState();

    /// <summary>The first index still held as an entry (the compaction point + 1).</summary>
    ulong FirstIndex { get; }

    /// <summary>The last stored index (Snapshot.Index when no entry follows it).</summary>
    ulong LastIndex { get; }

    /// <summary>The term of the entry at <paramref name="index"/>, for FirstIndex-1 &lt;= index &lt;= LastIndex.</summary>
    LogReadStatus TryGetTerm(ulong index, out ulong term);

    /// <summary>Appends entries [lo, hi) to <paramref name="into"/>, stopping once their total size would exceed <paramref name="maxBytes"/> (at least one entry is returned).</summary>
    LogReadStatus TryGetEntries(ulong lo, ulong hi, ulong maxBytes, List<Entry> into);

    SnapshotMetadata Snapshot { get; }
}

/// <summary>The durable Raft state as the host writes it. Every method returns only once its change is durable (but see <see cref="Save"/> on the commit index).</summary>
public interface IRaftStorage : IRaftLogReader, IDisposable
{
    /// <summary>
    /// Makes a Ready's persistence durable in one commit: the snapshot (if any; the log before it is discarded,
    /// and the suffix after it kept only if the entry at its index has its term), then the entries (the first one
    /// supersedes every stored entry at or after its index), then the hard state. The commit index may be the one
    /// exception: saved with nothing else to write (<see cref="Ready.MustSync"/> false), it may become durable only
    /// with the next save that writes entries or a snapshot, and a crash before that may lose it; except when it
    /// commits a membership change, which must be durable at once (a node that applied a change must find it
    /// committed after a restart, or it could count voters the operator has since shut down).
    /// </summary>
    void Save(HardState? hardState, IReadOnlyList<Entry> entries, SnapshotMetadata? snapshot);

    /// <summary>Records that a snapshot the host took locally covers everything up to <paramref name="snapshot"/>.Index, and discards entries up to <paramref name="compactTo"/>.</summary>
    void CreateSnapshot(SnapshotMetadata snapshot, ulong compactTo);
}
