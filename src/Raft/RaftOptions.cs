namespace Dcache.Raft;

/// <summary>How one Raft node behaves. Times are in ticks: the host decides how long a tick is.</summary>
public sealed class RaftOptions
{
    /// <summary>This node's id; never 0.</summary>
    public ulong Id { get; set; }

    /// <summary>A follower that hears nothing from a leader for a randomized [ElectionTicks, 2*ElectionTicks) ticks starts an election.</summary>
    public int ElectionTicks { get; set; } = 10;

    /// <summary>A leader sends heartbeats every HeartbeatTicks ticks. Must be less than ElectionTicks.</summary>
    public int HeartbeatTicks { get; set; } = 1;

    /// <summary>Ask for votes only after a pre-vote round shows the election could be won, so a rejoining node cannot disrupt a healthy leader.</summary>
    public bool PreVote { get; set; } = true;

    /// <summary>A leader that has not heard from a quorum within an election timeout steps down; followers that hear from a live leader ignore vote requests.</summary>
    public bool CheckQuorum { get; set; } = true;

    /// <summary>Upper bound on the bytes of entries in one Append message.</summary>
    public ulong MaxSizePerMessage { get; set; } = 1024 * 1024;

    /// <summary>Upper bound on Append messages in flight to one follower while replicating.</summary>
    public int MaxInflightMessages { get; set; } = 256;

    /// <summary>Upper bound on bytes of entries in flight to one follower (0 = no limit besides the message count).</summary>
    public ulong MaxInflightBytes { get; set; } = 32 * 1024 * 1024;

    /// <summary>Upper bound on bytes of committed entries handed out in one Ready.</summary>
    public ulong MaxCommittedSizePerReady { get; set; } = 8 * 1024 * 1024;

    /// <summary>Upper bound on bytes of proposed but uncommitted entries on a leader (0 = no limit); proposals past it are refused.</summary>
    public ulong MaxUncommittedBytes { get; set; } = 64 * 1024 * 1024;

    /// <summary>The index the host's state machine already reflects at start (its loaded snapshot's index); committed entries after it are handed out again.</summary>
    public ulong Applied { get; set; }

    /// <summary>Test-only: deliberately break one safety rule so the harness can prove it notices.</summary>
    internal SafetyMutation Mutation { get; set; }

    public void Validate()
    {
        if (Id == 0)
        {
            throw new ArgumentException("Id must not be 0", nameof(Id));
        }

        if (HeartbeatTicks <= 0)
        {
            throw new ArgumentException("HeartbeatTicks must be positive", nameof(HeartbeatTicks));
        }

        if (ElectionTicks <= HeartbeatTicks)
        {
            throw new ArgumentException("ElectionTicks must be greater than HeartbeatTicks", nameof(ElectionTicks));
        }

        if (MaxInflightMessages <= 0)
        {
            throw new ArgumentException("MaxInflightMessages must be positive", nameof(MaxInflightMessages));
        }
    }
}

/// <summary>Planted bugs for mutation tests. Never set outside tests.</summary>
[Flags]
internal enum SafetyMutation
{
    None = 0,
    /// <summary>Grant a vote even after voting for someone else in the same term.</summary>
    VoteTwiceInTerm = 1,
    /// <summary>Commit an entry of an earlier term by counting replicas (Raft paper, figure 8).</summary>
    CommitPreviousTermByCounting = 2,
    /// <summary>A follower acknowledges appended entries one Ready before handing them out to be persisted.</summary>
    AckBeforePersist = 4,
    /// <summary>A leader answers ReadIndex at once, without a heartbeat round confirming it still leads.</summary>
    ReadIndexWithoutQuorum = 8,
    /// <summary>A leader's Append messages go out before its persistence even when their commit index covers entries not yet durable there.</summary>
    AppendsAheadOfDurableCommit = 16,
}

/// <summary>The core's only source of randomness, injected so that a seed decides a whole run.</summary>
public interface IRandomSource
{
    /// <summary>A uniformly distributed integer in [0, maxExclusive).</summary>
    int Next(int maxExclusive);
}

/// <summary>An <see cref="IRandomSource"/> over <see cref="System.Random"/> with a given seed.</summary>
public sealed class SeededRandom(int seed) : IRandomSource
{
    private readonly Random _random = new(seed);

    public int Next(int maxExclusive) => _random.Next(maxExclusive);
}
