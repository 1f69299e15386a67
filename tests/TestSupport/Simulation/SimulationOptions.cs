using Dcache.Raft;
using Dcache.TestSupport.Linearizability;

namespace Dcache.TestSupport.Simulation;

/// <summary>What the history checker concluded about a client history.</summary>
public enum HistoryVerdict
{
    Linearizable,
    NotLinearizable,
    /// <summary>The checker ran out of its effort budget: neither a pass nor a proven failure.</summary>
    Unknown,
}

/// <summary>Checks a client history (the linearizability checker, adapted); Detail explains a failure.</summary>
public delegate (HistoryVerdict Verdict, string Detail) HistoryCheck(IReadOnlyList<Operation> history);

/// <summary>Relative weights of the fault actions the nemesis picks from during the chaos phase.</summary>
public sealed record FaultWeights(
    int Crash,
    int Partition,
    int IsolateLeader,
    int Asymmetric,
    int Heal,
    int TransferLeadership)
{
    public static FaultWeights Default { get; } = new(Crash: 3, Partition: 2, IsolateLeader: 2, Asymmetric: 2, Heal: 2, TransferLeadership: 2);

    public int Total => Crash + Partition + IsolateLeader + Asymmetric + Heal + TransferLeadership;
}

/// <summary>
/// Everything that shapes one simulated run. The seed decides every choice these leave open (rates are drawn per run
/// from the ranges given here), so the same options always produce the same run.
/// </summary>
public sealed record SimulationOptions
{
    public int Seed { get; init; }

    /// <summary>Voters the cluster starts with (3 or 5 in the sweeps); membership changes keep returning to this count.</summary>
    public int Nodes { get; init; } = 3;

    public int Clients { get; init; } = 3;

    /// <summary>Keys the clients contend on: few, so reads and writes overlap.</summary>
    public int Keys { get; init; } = 3;

    public int TickMs { get; init; } = 10;

    public int ElectionTicks { get; init; } = 10;

    public int HeartbeatTicks { get; init; } = 1;

    /// <summary>Length of the phase with faults, membership changes and client traffic.</summary>
    public int ChaosMs { get; init; } = 3000;

    /// <summary>After the chaos phase everything heals; the cluster must be quiet and converged within this long.</summary>
    public int QuietDeadlineMs { get; init; } = 4000;

    /// <summary>
    /// After healing, a leader followed by every voter must exist within this many ticks: four of the longest
    /// randomized election timeouts (2 x ElectionTicks each), room for a few split votes. Measured over 8,000 runs of
    /// the sweep and the liveness profile: median 1-5 ticks, p99 about 25, max 54.
    /// </summary>
    public int LivenessBoundTicks { get; init; } = 80;

    public int MinMessageDelayMs { get; init; } = 1;

    public int MaxMessageDelayMs { get; init; } = 20;

    /// <summary>The run's loss rate is drawn from [0, MaxLossRate].</summary>
    public double MaxLossRate { get; init; } = 0.05;

    /// <summary>The run's duplication rate is drawn from [0, MaxDuplicateRate].</summary>
    public double MaxDuplicateRate { get; init; } = 0.05;

    /// <summary>Time to make a Ready durable is drawn from [0, MaxDiskLatencyMs] (nothing to persist: immediate).</summary>
    public double MaxDiskLatencyMs { get; init; } = 3;

    public int MinFaultIntervalMs { get; init; } = 40;

    public int MaxFaultIntervalMs { get; init; } = 250;

    public FaultWeights Faults { get; init; } = FaultWeights.Default;

    public int MinDowntimeMs { get; init; } = 20;

    public int MaxDowntimeMs { get; init; } = 400;

    public int MinPartitionMs { get; init; } = 50;

    public int MaxPartitionMs { get; init; } = 500;

    /// <summary>
    /// Leader churn: chance that a node which just became leader fails after a short delay (chaos phase only):
    /// half the time it crashes, half the time it is cut off from everyone for a partition's duration.
    /// </summary>
    public double NewLeaderFailureChance { get; init; } = 0.05;

    /// <summary>That failure comes after a delay drawn from [0, MaxNewLeaderFailureDelayMs].</summary>
    public int MaxNewLeaderFailureDelayMs { get; init; } = 30;

    /// <summary>At most this many nodes are down at once (-1: a minority of the initial voters).</summary>
    public int MaxCrashedNodes { get; init; } = -1;

    /// <summary>Add a learner, promote it, remove a voter: by seeded chance, during faults.</summary>
    public bool MembershipChanges { get; init; } = true;

    public int MinMembershipIntervalMs { get; init; } = 100;

    public int MaxMembershipIntervalMs { get; init; } = 400;

    /// <summary>Chance that a voter removal picks the leader itself.</summary>
    public double RemoveLeaderChance { get; init; } = 0.3;

    /// <summary>
    /// Off (0) by default. With no learner waiting, the chance that the operator removes a voter although the cluster
    /// has no more than <see cref="Nodes"/> of them, shrinking it down to <see cref="MinVoters"/> (two- and one-voter
    /// configurations are where a change's timing matters most).
    /// </summary>
    public double ShrinkChance { get; init; }

    /// <summary>The fewest voters <see cref="ShrinkChance"/> may leave.</summary>
    public int MinVoters { get; init; } = 1;

    /// <summary>
    /// Off by default. The operator shuts a removed node down only once the one voter its removal left (if just one)
    /// has applied that removal: until then that voter may need the removed node's vote (a change takes effect when
    /// applied, so a voter that missed the commit still counts the removed one).
    /// </summary>
    public bool KeepRemovedUntilLastVoterApplied { get; init; }

    /// <summary>
    /// Off (0) by default. Chance that the leader fails within <see cref="MaxFailAfterChangeDelayMs"/> of proposing a
    /// membership change (crashes or is cut off, half the time each): the change may be lost, persisted only there, or
    /// on a minority, while the others elect.
    /// </summary>
    public double FailAfterChangeChance { get; init; }

    public int MaxFailAfterChangeDelayMs { get; init; } = 10;

    /// <summary>Passed to every node when positive: small values split the replay after a restart over several Readys.</summary>
    public ulong MaxCommittedSizePerReady { get; init; }

    /// <summary>A host snapshots its state machine every N applied entries, N drawn per node from this range.</summary>
    public int MinSnapshotEvery { get; init; } = 8;

    public int MaxSnapshotEvery { get; init; } = 40;

    /// <summary>Entries kept in the log behind a snapshot, drawn from [0, MaxSnapshotKeep].</summary>
    public int MaxSnapshotKeep { get; init; } = 6;

    public int ClientTimeoutMs { get; init; } = 400;

    public int MaxClientThinkMs { get; init; } = 10;

    public double ReadFraction { get; init; } = 0.5;

    /// <summary>Passed to every node (small values split replication into many messages).</summary>
    public ulong MaxSizePerMessage { get; init; } = 1024 * 1024;

    /// <summary>Passed to every node; 0 draws a value in [1, 16] per run so flow control is exercised.</summary>
    public int MaxInflightMessages { get; init; }

    /// <summary>A planted bug switched on in every node (mutation tests).</summary>
    internal SafetyMutation Mutation { get; init; }

    /// <summary>
    /// Protocol-level checks beyond the five Raft invariants: a node votes at most once per term, and an entry is
    /// durable on a quorum when a leader commits it. Mutation tests switch them off to prove the invariants and the
    /// linearizability check catch the planted bugs on their own.
    /// </summary>
    public bool ProtocolChecks { get; init; } = true;

    /// <summary>
    /// On (the default): a crash loses, half the time, a commit index the node saved without a sync (see
    /// <c>Ready.MustSync</c>), so restarts also begin from an older commit index. Off for disks that keep it
    /// (<see cref="ISimulatedDisk.LoseUnsyncedCommit"/>).
    /// </summary>
    public bool LoseUnsyncedCommits { get; init; } = true;

    /// <summary>
    /// Writes whose client never saw the outcome are settled from the log at the end (etcd's robustness tests patch
    /// histories the same way): a write committed at its (index, term) returns when its commit was first observed; a
    /// write superseded at its index is dropped. Without it they stay open-ended ("may happen at any later time").
    /// </summary>
    public bool ResolveUnknownWritesFromLog { get; init; } = true;

    /// <summary>
    /// Off by default: start the initial voters from a genesis snapshot at index 1 (term 1) instead of
    /// <see cref="MemoryStorage.Bootstrap"/>'s founding log, so that every node added later must receive a snapshot
    /// (carrying the membership) instead of replaying the founding membership changes from index 1. (This profile was
    /// first a workaround for a bug the sweep found: founding membership in an index-0 snapshot that was never sent.)
    /// </summary>
    public bool GenesisSnapshot { get; init; }

    /// <summary>Checks the client history at the end; null skips the check.</summary>
    public HistoryCheck? HistoryChecker { get; init; }

    /// <summary>Creates the cluster's disks; null uses <see cref="MemorySimulatedDisk"/>.</summary>
    public Func<ISimulatedDisk>? DiskFactory { get; init; }

    /// <summary>When set, every event is written here as it happens (for replaying a failing seed).</summary>
    public TextWriter? FullTrace { get; init; }

    /// <summary>Events kept for the failure report.</summary>
    public int TraceLength { get; init; } = 50;

    /// <summary>A run that needs more events than this is reported as a failure (a livelock or a message storm).</summary>
    public long MaxEvents { get; init; } = 3_000_000;
}
