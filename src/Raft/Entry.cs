namespace Dcache.Raft;

/// <summary>What an entry carries: application data, a membership change, or nothing (the no-op a leader appends at the start of its term).</summary>
public enum EntryType : byte
{
    Normal = 1,
    ConfChange = 2,
}

/// <summary>One Raft log entry. A Normal entry with empty data is the leader's no-op.</summary>
public readonly record struct Entry(ulong Index, ulong Term, EntryType Type, ReadOnlyMemory<byte> Data)
{
    /// <summary>Bytes counted against message and in-flight limits: the payload plus a fixed header.</summary>
    public ulong Size => (ulong)Data.Length + EntryOverhead;

    internal const ulong EntryOverhead = 24;

    public override string ToString() => $"{Index}/{Term}:{Type}[{Data.Length}]";
}

/// <summary>The state Raft must have on disk before it may act on it: current term, vote in that term, and the commit index.</summary>
public readonly record struct HardState(ulong Term, ulong Vote, ulong Commit)
{
    public static HardState Empty => default;

    public bool IsEmpty => Term == 0 && Vote == 0 && Commit == 0;
}

/// <summary>A snapshot's identity: the last index and term it covers and the membership as of that index. The data itself moves outside the core.</summary>
public sealed record SnapshotMetadata(ulong Index, ulong Term, Membership Membership)
{
    public static SnapshotMetadata Empty { get; } = new(0, 0, Membership.Empty);

    public bool IsEmpty => Index == 0;
}
