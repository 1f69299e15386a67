namespace Dcache.Raft;

public enum MessageType : byte
{
    /// <summary>Leader -> follower: entries after (Index, LogTerm), and the leader's commit index.</summary>
    Append = 1,
    /// <summary>Follower -> leader: Index is the last index now matching (or, when Reject, the rejected index with RejectHint/LogTerm for fast backtracking).</summary>
    AppendResponse,
    /// <summary>Candidate -> voter: Index/LogTerm are the candidate's last entry.</summary>
    Vote,
    /// <summary>A rejection carries the voter's commit index in Commit and the term of its entry there in LogTerm.</summary>
    VoteResponse,
    /// <summary>Like Vote, for the next term, without anyone changing term: a probe whether an election could be won.</summary>
    PreVote,
    PreVoteResponse,
    /// <summary>Leader -> follower: Commit is min(follower match, leader commit); Context carries the newest pending read-index round.</summary>
    Heartbeat,
    HeartbeatResponse,
    /// <summary>Leader -> follower: install the snapshot in <see cref="Message.Snapshot"/>. The host moves the data before stepping it.</summary>
    Snapshot,
    /// <summary>
    /// Leader -> transfer target: start an election now, ignoring leader stickiness. Index/LogTerm are the leader's last
    /// entry (which the target holds) and Commit its commit index.
    /// </summary>
    TimeoutNow,
    /// <summary>Follower -> leader: asks for a read index on behalf of the follower's request Context.</summary>
    ReadIndex,
    /// <summary>Leader -> follower: Index is the read index for Context (Reject when the leader could not serve it).</summary>
    ReadIndexResponse,
}

/// <summary>A message between Raft peers. Immutable once handed out in a <see cref="Ready"/>.</summary>
public sealed record Message
{
    public required MessageType Type { get; init; }
    public required ulong From { get; init; }
    public required ulong To { get; init; }
    public ulong Term { get; init; }
    public ulong LogTerm { get; init; }
    public ulong Index { get; init; }
    public ulong Commit { get; init; }
    public IReadOnlyList<Entry> Entries { get; init; } = [];
    public bool Reject { get; init; }
    public ulong RejectHint { get; init; }
    public ulong Context { get; init; }
    /// <summary>A vote request made because the leader handed over leadership (TimeoutNow): voters ignore leader stickiness.</summary>
    public bool LeadershipTransfer { get; init; }
    public SnapshotMetadata? Snapshot { get; init; }

    public override string ToString() =>
        $"{Type} {From}->{To} t{Term} i{Index} lt{LogTerm} c{Commit} n{Entries.Count}{(Reject ? " reject h" + RejectHint : "")}{(Context != 0 ? " ctx" + Context : "")}";
}
