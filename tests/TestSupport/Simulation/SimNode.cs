using Dcache.Raft;

namespace Dcache.TestSupport.Simulation;

internal enum NodeStatus
{
    Running,
    Crashed,
    /// <summary>Left the cluster (its removal committed) and was shut down for good.</summary>
    Removed,
}

/// <summary>A client write accepted by a node, waiting for the entry at its index to be applied there.</summary>
internal readonly record struct PendingProposal(int Client, long Token);

/// <summary>A client read waiting at a node for its read index, then for the node to apply that far.</summary>
internal sealed class PendingRead(ulong context, int client, long token, string key)
{
    public ulong Context { get; } = context;
    public int Client { get; } = client;
    public long Token { get; } = token;
    public string Key { get; } = key;
    public ulong? Index { get; set; }
}

/// <summary>One simulated server: its disk (which survives crashes) and its process state (which does not).</summary>
internal sealed class SimNode(ulong id)
{
    public ulong Id { get; } = id;

    public NodeStatus Status { get; set; } = NodeStatus.Running;

    /// <summary>Bumped on every crash and restart: events scheduled for an earlier incarnation are ignored.</summary>
    public int Generation { get; set; }

    // --- process state, lost on a crash ---
    public RaftNode? Raft { get; set; }
    public IRaftStorage? Storage { get; set; }
    public Ready? ReadyInProgress { get; set; }
    public KvStateMachine Kv { get; set; } = new();
    public ulong Applied { get; set; }
    public ulong AppliedTerm { get; set; }
    public ulong SnapshotIndex { get; set; }
    public SortedDictionary<ulong, PendingProposal> Proposals { get; } = [];

    /// <summary>Indexes of the last snapshots this process took or installed: their data is kept (see RetainSnapshots).</summary>
    public Queue<ulong> RecentSnapshots { get; } = new();
    public List<PendingRead> Reads { get; } = [];

    // --- host configuration (drawn once per node) ---
    public int SnapshotEvery { get; set; }
    public int SnapshotKeep { get; set; }

    /// <summary>
    /// A copy of everything made durable on this node's disk, kept by the simulator itself: invariant checks read it
    /// (durable quorum) and a restart compares the reopened storage with it (nothing Save returned from may be lost).
    /// </summary>
    public MemoryStorage Durable { get; set; } = new();

    /// <summary>The commit index as of the last save that synced the log (entries or a snapshot): a later one saved alone may be lost in a crash.</summary>
    public ulong SyncedCommit { get; set; }

    // --- membership bookkeeping of the operator ---
    public bool WasMember { get; set; }
    public bool ShutdownScheduled { get; set; }

    // --- invariant observer state for the current incarnation ---
    public Role ObservedRole { get; set; } = Role.Follower;
    public ulong ObservedTerm { get; set; }
    public ulong ObservedCommit { get; set; }

    /// <summary>The commit index the current incarnation found on disk: its membership is as of at least that index.</summary>
    public ulong MembershipFloor { get; set; }

    /// <summary>The highest commit index this incarnation reached as the only voter of its configuration.</summary>
    public ulong SingleVoterCommitUpTo { get; set; }

    /// <summary>Terms of the node's in-memory log from <see cref="LogTermsFirst"/> on, as last observed.</summary>
    public List<ulong> LogTerms { get; } = [];
    public ulong LogTermsFirst { get; set; } = 1;

    /// <summary>Highest term in any message this node sent: after a restart its durable term must be at least this.</summary>
    public ulong MaxSentTerm { get; set; }

    public bool IsRunning => Status == NodeStatus.Running && Raft is not null;

    public override string ToString() => $"n{Id}";
}
