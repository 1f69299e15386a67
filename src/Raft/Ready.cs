namespace Dcache.Raft;

public enum Role : byte
{
    Follower = 1,
    PreCandidate,
    Candidate,
    Leader,
}

/// <summary>Volatile state worth reporting (not persisted): who leads and what this node is.</summary>
public readonly record struct SoftState(ulong Leader, Role Role);

/// <summary>A read index obtained for the host's request <see cref="Context"/>: the read may be served once the applied index reaches <see cref="Index"/>.</summary>
public readonly record struct ReadState(ulong Context, ulong Index);

/// <summary>
/// Everything the host must do after the core changed, handed out by <see cref="RaftNode.GetReady"/>.
/// <para>The host MUST process it in this order, then call <see cref="RaftNode.Advance"/>:</para>
/// <list type="number">
/// <item>Persist, in one durable commit: <see cref="Snapshot"/> (if set: the host already holds its data), then
/// <see cref="Entries"/> (an entry with index i supersedes every stored entry with index &gt;= i), then
/// <see cref="HardState"/>. Nothing below may happen before this is durable, with one exception: the commit index
/// alone need not be (when <see cref="MustSync"/> is false it may be written lazily, made durable by a later save
/// that writes entries or a snapshot; a restart may then find an older commit index, never a newer one, and learns
/// the rest from the leader again).</item>
/// <item>Send <see cref="Messages"/>. Votes and append acknowledgements in it promise durability of step 1.</item>
/// <item>Apply <see cref="Snapshot"/> data (if set) to the state machine, then <see cref="CommittedEntries"/> in order.</item>
/// <item>Serve each of <see cref="ReadStates"/> once the applied index reaches its Index; fail the requests in <see cref="DroppedReads"/>.</item>
/// </list>
/// <para>The exception is <see cref="MessagesBeforePersistence"/>: they may be sent as soon as the Ready is taken,
/// before or while step 1 runs (the leader replicating in parallel with its own disk write).</para>
/// </summary>
public sealed class Ready
{
    /// <summary>Set when leader or role changed since the last Ready.</summary>
    public SoftState? SoftState { get; init; }

    /// <summary>Set when term, vote or commit changed since the last Ready.</summary>
    public HardState? HardState { get; init; }

    /// <summary>Entries to persist (not yet durable). Contiguous and ascending.</summary>
    public IReadOnlyList<Entry> Entries { get; init; } = [];

    /// <summary>A snapshot received from the leader, to persist and then apply. Set only on followers.</summary>
    public SnapshotMetadata? Snapshot { get; init; }

    /// <summary>Entries known committed, to apply in order. They are durable by the time step 3 runs.</summary>
    public IReadOnlyList<Entry> CommittedEntries { get; init; } = [];

    /// <summary>Messages to send after the persistence of this Ready is durable.</summary>
    public IReadOnlyList<Message> Messages { get; init; } = [];

    /// <summary>
    /// A leader's Append messages that promise nothing about this node's disk: send them as soon as the Ready is taken,
    /// without waiting for step 1 (their term and the commit index they carry are already durable here).
    /// </summary>
    public IReadOnlyList<Message> MessagesBeforePersistence { get; init; } = [];

    /// <summary>Read indexes now known for the host's ReadIndex requests.</summary>
    public IReadOnlyList<ReadState> ReadStates { get; init; } = [];

    /// <summary>Contexts of ReadIndex requests this node gave up on (it stopped leading, or knew no leader): fail them, do not answer them.</summary>
    public IReadOnlyList<ulong> DroppedReads { get; init; } = [];

    /// <summary>True when step 1 has something to write.</summary>
    public bool MustPersist => HardState is not null || Entries.Count > 0 || Snapshot is not null;

    /// <summary>
    /// True when step 1 must be durable before anything else happens: it writes entries, a snapshot, or a new term or
    /// vote (what acknowledgements and votes promise). False when only the commit index moved: a commit index is
    /// never promised to anyone, and a lower one after a crash is learned again from the leader. (Storage still syncs
    /// a commit of a membership change at once: see <see cref="IRaftStorage.Save"/>.)
    /// </summary>
    public bool MustSync { get; init; }
}
