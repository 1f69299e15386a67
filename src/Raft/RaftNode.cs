namespace Dcache.Raft;

/// <summary>Where a leader stands with one follower (reported by <see cref="RaftNode.GetStatus"/>).</summary>
public enum ReplicationState : byte
{
    /// <summary>Unsure where the follower's log ends: one Append at a time until it answers.</summary>
    Probe = 1,
    /// <summary>Follower keeps up: Appends are pipelined up to the in-flight caps.</summary>
    Replicate,
    /// <summary>The entries it needs are compacted: a snapshot is on its way.</summary>
    Snapshot,
}

public readonly record struct PeerProgress(ulong Id, ulong Match, ulong Next, ReplicationState State, bool IsLearner, bool RecentActive);

public sealed record RaftStatus(
    ulong Id,
    ulong Term,
    ulong Vote,
    Role Role,
    ulong Leader,
    ulong Commit,
    ulong Applied,
    ulong LastIndex,
    Membership Membership,
    IReadOnlyList<PeerProgress> Progress);

/// <summary>
/// One Raft node, driven from outside and deterministic: the host calls <see cref="Tick"/> on a timer,
/// <see cref="Step"/> for each message from a peer, and the request methods; then takes <see cref="GetReady"/>,
/// carries it out in the order written on <see cref="Ready"/>, and calls <see cref="Advance"/>.
/// Not thread-safe: one loop owns it.
/// </summary>
public sealed partial class RaftNode
{
}
