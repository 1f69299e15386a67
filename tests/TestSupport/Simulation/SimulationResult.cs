using Dcache.TestSupport.Linearizability;

namespace Dcache.TestSupport.Simulation;

public enum FailureKind
{
    /// <summary>A Raft safety invariant was violated (see the message for which).</summary>
    Invariant,
    /// <summary>After healing, no leader within the bound, or the cluster did not settle before the deadline.</summary>
    Liveness,
    /// <summary>After settling, replicas disagree, or a committed entry or a pending proposal is missing.</summary>
    Convergence,
    /// <summary>The history checker proved the client history is not linearizable.</summary>
    NotLinearizable,
    /// <summary>The history checker gave up (its effort bound): reported as a failure to investigate.</summary>
    LinearizabilityUnknown,
    /// <summary>The core or the storage threw, or the host saw a Ready that breaks the documented contract.</summary>
    Exception,
}

/// <summary>Why a run failed, when (virtual time) and what led up to it.</summary>
public sealed record SimulationFailure(FailureKind Kind, string Message, long TimeMicros, string Trace)
{
    public override string ToString() =>
        $"{Kind} at {TimeMicros / 1000.0:0.000} ms: {Message}{Environment.NewLine}last events:{Environment.NewLine}{Trace}";
}

/// <summary>Counters from one run, to see what a sweep exercised.</summary>
public sealed class SimulationStats
{
    public long Events { get; set; }
    public long MessagesSent { get; set; }
    public long MessagesDelivered { get; set; }
    public long Readies { get; set; }
    public int Crashes { get; set; }
    public int Restarts { get; set; }
    public int Partitions { get; set; }
    public int LeaderElections { get; set; }
    public int PreviousTermCommits { get; set; }
    public int TransfersRequested { get; set; }
    public int ConfChangesProposed { get; set; }
    public int ConfChangesApplied { get; set; }
    public int NodesAdded { get; set; }
    public int NodesRemoved { get; set; }
    public int SnapshotsTaken { get; set; }
    public int SnapshotsInstalled { get; set; }
    public int SnapshotTransfersWithoutData { get; set; }
    public int ReadsServed { get; set; }
    public int WritesCommitted { get; set; }
    public int WritesUnknown { get; set; }
    public int WritesResolvedFromLog { get; set; }
    public int HistoryOperations { get; set; }
    public long VirtualMicros { get; set; }

    /// <summary>Ticks from healing to a leader that every voter follows (-1 when never reached).</summary>
    public int TicksToLeaderAfterHeal { get; set; } = -1;

    public void Add(SimulationStats other)
    {
        Events += other.Events;
        MessagesSent += other.MessagesSent;
        MessagesDelivered += other.MessagesDelivered;
        Readies += other.Readies;
        Crashes += other.Crashes;
        Restarts += other.Restarts;
        Partitions += other.Partitions;
        LeaderElections += other.LeaderElections;
        PreviousTermCommits += other.PreviousTermCommits;
        TransfersRequested += other.TransfersRequested;
        ConfChangesProposed += other.ConfChangesProposed;
        ConfChangesApplied += other.ConfChangesApplied;
        NodesAdded += other.NodesAdded;
        NodesRemoved += other.NodesRemoved;
        SnapshotsTaken += other.SnapshotsTaken;
        SnapshotsInstalled += other.SnapshotsInstalled;
        SnapshotTransfersWithoutData += other.SnapshotTransfersWithoutData;
        ReadsServed += other.ReadsServed;
        WritesCommitted += other.WritesCommitted;
        WritesUnknown += other.WritesUnknown;
        WritesResolvedFromLog += other.WritesResolvedFromLog;
        HistoryOperations += other.HistoryOperations;
        VirtualMicros += other.VirtualMicros;
        TicksToLeaderAfterHeal = Math.Max(TicksToLeaderAfterHeal, other.TicksToLeaderAfterHeal);
    }

    public override string ToString() =>
        $"events={Events} sent={MessagesSent} delivered={MessagesDelivered} readies={Readies} crashes={Crashes} restarts={Restarts} " +
        $"partitions={Partitions} elections={LeaderElections} previousTermCommits={PreviousTermCommits} transfers={TransfersRequested} confChanges={ConfChangesProposed}/{ConfChangesApplied} " +
        $"added={NodesAdded} removed={NodesRemoved} snapshots={SnapshotsTaken} installs={SnapshotsInstalled} noData={SnapshotTransfersWithoutData} reads={ReadsServed} " +
        $"writes={WritesCommitted} unknown={WritesUnknown} resolvedFromLog={WritesResolvedFromLog} history={HistoryOperations} " +
        $"virtual={VirtualMicros / 1000}ms maxTicksToLeader={TicksToLeaderAfterHeal}";
}

/// <summary>The outcome of one run.</summary>
public sealed class SimulationResult
{
    public required int Seed { get; init; }

    public SimulationFailure? Failure { get; init; }

    public bool Passed => Failure is null;

    public required SimulationStats Stats { get; init; }

    public required IReadOnlyList<Operation> History { get; init; }

    /// <summary>A hash of every event and the final state: equal for equal runs (the determinism check).</summary>
    public required ulong Fingerprint { get; init; }
}
