using System.Buffers;
using System.Collections.Concurrent;
using System.Collections.Immutable;
using System.Threading.Channels;
using Dcache.Cache;
using Dcache.Node.Hosting;
using Dcache.Node.Services;
using Dcache.Node.Transport;
using Dcache.Raft;
using Dcache.Storage;
using Microsoft.Extensions.Logging;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Consensus;

/// <summary>A consistent view of the node published by the driver loop after every round, for status calls.</summary>
public sealed record NodeStatusView(
    ulong NodeId,
    Role Role,
    ulong Term,
    ulong LeaderId,
    ulong CommitIndex,
    ulong AppliedIndex,
    ulong FirstIndex,
    ulong LastIndex,
    Membership Membership,
    IReadOnlyList<PeerProgress> Progress,
    CacheStatistics Cache);

/// <summary>Settings of the driver loop (derived from the node's options).</summary>
public sealed record RaftDriverSettings(
    ulong NodeId,
    RaftOptions Raft,
    TimeSpan Tick,
    ulong SnapshotEntries,
    ulong SnapshotCatchUpEntries,
    TimeSpan ExpiryPurgeInterval,
    TimeSpan RequestTimeout)
{
    /// <summary>Largest log entry a write may make: it must fit, alone, in one Append message to a follower.</summary>
    public int MaxEntryBytes { get; init; } = Protocol.MessageLimits.MaxItemBytes(Protocol.MessageLimits.DefaultMaxMessageBytes);

    /// <summary>
    /// Keys a long read (KEYS, building SCAN's index) may look at in one loop round; about a millisecond's work on a large
    /// cache whose keys are spread over memory, so that such a read never holds the loop near an election timeout.
    /// </summary>
    public int LongReadSliceKeys { get; init; } = 4096;

    /// <summary>TEST ONLY, breaks linearizability: linearizable reads are served locally (see NodeOptions.TestOnlyUnsafeReads).</summary>
    public bool TestOnlyUnsafeReads { get; init; }

    /// <summary>
    /// The newest entry format of the build that founded this node's log (MetadataStore.FoundingEntryFormat), 0 if
    /// unknown: the founders of a cluster run one build, so a member not heard from reads at least that.
    /// </summary>
    public byte FoundingEntryFormat { get; init; }
}

/// <summary>
/// The one loop that owns the Raft core and the cache state machine. Inputs (ticks, peer messages, commands, admin
/// requests) arrive through one channel; each round drains what is pending, then carries out the core's Ready in
/// order: persist with one durable commit, send, apply, answer. Because everything pending joins one Ready, many
/// concurrent writes share one fsync (group commit).
/// </summary>
public sealed partial class RaftDriver : IRaftInbox, ITransportEvents, IAsyncDisposable
{
    private readonly RaftDriverSettings _settings;
    private readonly IRaftStorage _storage;
    private readonly INodeSnapshotStore _snapshots;
    private readonly CacheStateMachine _cache;
    private readonly AddressBook _addresses;
    // Keeps the node's metadata (meta.db) showing the membership it runs with: (as of log index, membership).
    private readonly Action<ulong, Membership> _recordMembership;
    private readonly TimeProvider _clock;
    private readonly long _createdAt;
    private readonly NodeMetrics _metrics;
    private readonly ILogger _logger;
    private readonly Channel<DriverInput> _inputs = Channel.CreateUnbounded<DriverInput>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stopping = new();
    private readonly ProposalsAwaitingApply<PendingWrite> _writes = new();
    private readonly DeferredReplies _deferredReplies = new();
    // Linearizable reads that arrive in one loop round share one ReadIndex request (and so, on a follower, one
    // message to the leader); the group waits for its read index, then for the apply to reach it.
    private readonly Dictionary<ulong, ReadGroup> _readsAwaitingIndex = [];
    private ReadGroup _openReadGroup = new();
    private readonly PriorityQueue<CommandInput, ulong> _readsAwaitingApply = new();
    // Membership changes proposed by operators: index -> (term proposed in, completion). Completed once the entry at
    // the index is applied and the core has taken the change in (true), or another entry took its place (false).
    private readonly ProposalsAwaitingApply<(ulong Term, TaskCompletionSource<bool> Completion)> _changesAwaitingApply = new();
    private readonly List<(TaskCompletionSource<bool> Completion, bool Applied)> _changesApplied = [];
    // The membership in effect at the applied index. The core's own is ahead of it while a snapshot's state is built.
    private Membership _followedMembership = Membership.Empty;
    private readonly ArrayBufferWriter<byte> _encodeBuffer = new(256);
    // The newest entry format each peer's build reads, as its Raft stream said (written by transport threads), and
    // the format proposals get, recomputed only when the membership or one of those changed.
    private readonly ConcurrentDictionary<ulong, byte> _peerEntryFormats = new();
    private int _peerEntryFormatsChanged;
    private int _proposalFormatComputedAt = -1;
    private Membership? _proposalFormatMembership;
    private byte _proposalFormat;
    private byte _proposalFormatUnheard;
    private readonly RaftNode _raft;
    private readonly LongReads _longReads;
    private readonly SnapshotCaptures _captures;
    // The automatic snapshot while its capture is in progress: dropped if a snapshot from the leader replaces the state.
    private SnapshotCapture? _automaticCapture;
    // A snapshot from the leader whose state is being built on the thread pool: the Ready that brought it, persisted and
    // sent but not yet applied nor advanced (so the core takes no other Ready meanwhile and applies nothing past it);
    // then, once the state is swapped in, that Ready again, for the rest of it to be applied and advanced.
    private Ready? _installing;
    private Ready? _installed;
    private PeerTransport? _transport;
    private readonly LeaderForwarder? _forwarder;
    private Task? _loop;
    private Task? _ticker;
    private ulong _nextReadContext;
    private ulong _lastSnapshotIndex;

    // The commit index found at start: the core's membership is as of it (not of the applied index) until the replay of
    // committed entries reaches it, so no snapshot is taken before then (its membership would be ahead of its index).
    private readonly ulong _replayedMembershipIndex;
    private bool _snapshotInProgress;
    // Snapshot work on the thread pool (an automatic snapshot being written, a leader's snapshot being built), started
    // on the loop: disposal waits for it, bounded, so the host does not close storage under it.
    private Task _persisting = Task.CompletedTask;
    private Task _building = Task.CompletedTask;

    /// <summary>How long disposal waits for snapshot work in progress before it lets storage close under it (which then refuses it).</summary>
    private static readonly TimeSpan SnapshotWorkStopBound = TimeSpan.FromSeconds(5);
    private ulong _appliedTerm;
    private long _lastPurgeProposalMs = long.MinValue / 2; // the first tick as leader purges

    // A purge of expired keys removes at most this many: removing a key costs 1-4 us, and every replica applies the
    // purge in one piece, so a wave of keys expiring together (loaded with one TTL, or given one EXPIREAT) is taken a
    // bounded bite per tick rather than all at once. While a member reads only format 4 or older, purges take whole
    // milliseconds of expiry, so a bite is this many plus the rest of the millisecond it ends in (unbounded).
    private const int MaxKeysPerPurge = 16_384;
    private ulong _lastPurgeIndex;
    private ulong _lastPurgeTerm;
    private bool _purgeBehind;
    private volatile NodeStatusView _status;
    private CancellationToken _closing;
    private int _disposed;
    private ulong _lastLeader;

    // Snapshots from the leader being received (gRPC threads): the store writes one snapshot at a time, so no
    // capture of this node's own is begun meanwhile (it could not be written, and was begun again at every Ready).
    private int _snapshotsReceiving;

    // Cancelled when this node stops leading: ends the snapshots it is sending (see PeerTransport.SendSnapshot).
    private CancellationTokenSource? _leadership;
    private bool _statusStale;

    private readonly record struct PendingWrite(ulong Term, CommandInput Input);

    /// <summary>Reads sharing one read index; each times out at its own deadline (senders give different ones).</summary>
    private sealed class ReadGroup : List<CommandInput>;

    public RaftDriver(
        RaftDriverSettings settings,
        IRaftStorage storage,
        INodeSnapshotStore snapshots,
        CacheStateMachine cache,
        AddressBook addresses,
        Action<ulong, Membership> recordMembership,
        TimeProvider clock,
        NodeMetrics metrics,
        ILogger<RaftDriver> logger,
        LeaderForwarder? forwarder = null)
    {
        _forwarder = forwarder;
        _settings = settings;
        _recordMembership = recordMembership;
        _metrics = metrics;
        _storage = storage;
        _snapshots = snapshots;
        _cache = cache;
        _longReads = new LongReads(cache, settings.LongReadSliceKeys);
        _captures = new SnapshotCaptures(cache, settings.LongReadSliceKeys);
        _addresses = addresses;
        _clock = clock;
        _createdAt = clock.GetTimestamp();
        _logger = logger;
        // A leader hears each reachable voter every heartbeat; a reading counts for a few of them at least.
        Clocks = new PeerClocks(clock, TimeSpan.FromTicks(Math.Max(PeerClocks.DefaultReadingsUsableFor.Ticks, 3 * settings.Tick.Ticks * settings.Raft.HeartbeatTicks)));

        // Restart: load the newest snapshot the log can continue from — at or after the log's own snapshot point and
        // within what is known committed (a snapshot received from a leader but not yet recorded in the log is not) —
        // then the core hands out the committed entries after it.
        var snapshot = storage.Snapshot;
        var commit = storage.InitialState().HardState.Commit;
        var usable = snapshots.All().FirstOrDefault(s => s.Metadata.Index >= snapshot.Index && s.Metadata.Index <= Math.Max(commit, snapshot.Index) && s.Metadata.Index <= storage.LastIndex);
        if (!snapshot.IsEmpty && usable is null)
        {
            throw new InvalidOperationException($"the Raft log starts at snapshot {snapshot.Index}, but the snapshot store holds no snapshot it can continue from");
        }

        if (usable is not null && !usable.Metadata.IsEmpty)
        {
            using var stream = usable.OpenRead();
            cache.LoadSnapshot(stream);
            snapshot = usable.Metadata;
            Log.SnapshotLoaded(logger, snapshot.Index, snapshot.Term, cache.StoredKeyCount);
        }

        _lastSnapshotIndex = snapshot.Index;
        _appliedTerm = snapshot.Term;
        settings.Raft.Applied = snapshot.Index;
        // Election timeouts must differ between nodes started together: seed from the OS, not the clock.
        _raft = new RaftNode(settings.Raft, storage, new SeededRandom(Random.Shared.Next()));
        // Read contexts must not repeat across restarts: the leader's answer to a request of the previous process can
        // arrive after a restart (its stream to us queues while it reconnects), and a read matched to it would be served
        // at that earlier read index, missing writes acknowledged since. Counting from a random point makes it so.
        _nextReadContext = (ulong)Random.Shared.NextInt64(long.MinValue, long.MaxValue);
        // The core has applied every committed membership change already, so the membership is as of the commit index.
        _replayedMembershipIndex = _raft.CommitIndex;
        FollowMembership(asOf: _raft.CommitIndex);
        Log.Restarted(logger, settings.NodeId, _raft.Term, _raft.CommitIndex, _raft.LastIndex, snapshot.Index);
        _status = BuildStatus();
    }

    public ulong NodeId => _settings.NodeId;

    /// <summary>The status as last published: once per tick, or at once on a change of role or leader (cheap, for metrics and /health).</summary>
    public NodeStatusView Status => _status;

    /// <summary>
    /// The status as of now, built on the loop: what the Status RPC answers, so that a caller that waits for a node to
    /// apply what a leader has committed compares indexes of one moment, not a tick old (a write acknowledged a moment
    /// ago is in the leader's commit index). The last published status once the loop has stopped.
    /// </summary>
    public async Task<NodeStatusView> CurrentStatusAsync()
    {
        if (Completion.IsCompleted)
        {
            return _status;
        }

        try
        {
            return await RunOnLoopAsync(_ => _status = BuildStatus()).ConfigureAwait(false);
        }
        catch (Exception) when (Completion.IsCompleted)
        {
            // The loop stopped meanwhile (how it failed is its own to report).
            return _status;
        }
    }

    public CacheStateMachine Cache => _cache;

    /// <summary>Starts the loop and the ticker. <paramref name="transport"/> carries outbound messages.</summary>
    public void Start(PeerTransport transport)
    {
        _transport = transport;
        if (_raft.Membership.Voters is [var only] && only == NodeId)
        {
            // Alone in the configuration: nobody to disrupt or to wait for, so take leadership without a timeout.
            _raft.Campaign();
        }

        _loop = Task.Factory.StartNew(RunLoop, TaskCreationOptions.LongRunning);
        _ticker = Task.Run(TickAsync);
    }

    /// <summary>
    /// Completes when the loop ends: at disposal, or faulted when the core or storage failed (the node must then stop;
    /// it no longer takes part in the cluster).
    /// </summary>
    public Task Completion => _loop ?? Task.CompletedTask;

    /// <summary>Runs a command: a write is proposed (leader only), a read served by ReadIndex or locally.</summary>
    public Task<Proto.Reply> ExecuteAsync(Proto.Command command)
    {
        var replies = new TaskReplySink();
        Execute(command, replies);
        return replies.Task;
    }

    /// <summary>Runs a command as <see cref="ExecuteAsync"/> does; its reply goes to <paramref name="replies"/>, exactly once.</summary>
    public void Execute(Proto.Command command, IReplySink replies)
    {
        var timeoutMs = (long)_settings.RequestTimeout.TotalMilliseconds;
        if (!command.IsWrite && command.TimeoutMs > 0)
        {
            // The sender stops waiting then (counted from its send, so this node's deadline is never the earlier one):
            // a read still unanswered after that, a long read's remaining slices included, is work for nobody.
            timeoutMs = Math.Min(timeoutMs, command.TimeoutMs);
        }

        var deadline = MonotonicMs + timeoutMs;
        if (!_inputs.Writer.TryWrite(new CommandInput(command, replies, deadline)))
        {
            replies.Complete(ReplyFactory.Failure(command.Id, Proto.FailureKind.Unavailable, "the node is shutting down"));
        }
    }

    /// <summary>Runs <paramref name="work"/> on the loop, where the core and the state machine may be read and changed.</summary>
    public Task<T> RunOnLoopAsync<T>(Func<RaftNode, T> work)
    {
        var completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var input = new LoopWorkInput(
            raft =>
            {
                // A caller's mistake goes back to the caller; it must not stop the loop.
                try
                {
                    completion.TrySetResult(work(raft));
                }
                catch (Exception ex) when (ex is InvalidOperationException or ArgumentException or KeyNotFoundException)
                {
                    completion.TrySetException(ex);
                }
                catch (Exception ex)
                {
                    // Anything else stops the loop (as a failure of the core would); the caller must not wait for ever.
                    completion.TrySetException(ex);
                    throw;
                }
            },
            ex => completion.TrySetException(ex));
        if (!_inputs.Writer.TryWrite(input))
        {
            completion.SetException(new NodeStoppedException("the node is shutting down"));
        }

        return completion.Task;
    }

    /// <summary>
    /// The applied index and the digest of the cache state at it: captured together on the loop, a slice per round, and
    /// hashed on the thread pool.
    /// </summary>
    public async Task<(ulong Index, string Digest)> DigestAsync()
    {
        var (metadata, state) = await CaptureStateAsync().ConfigureAwait(false);
        return (metadata.Index, await Task.Run(state.Digest).ConfigureAwait(false));
    }

    /// <summary>
    /// The cache state at the applied index, with that index's term and the membership in effect there, as of the round
    /// this reaches the loop; the keys are captured a slice per round after it (<see cref="SnapshotCaptures"/>). The
    /// capture is immutable: it may be written out (a backup) while the loop goes on applying.
    /// </summary>
    public Task<(SnapshotMetadata Metadata, CacheSnapshot State)> CaptureStateAsync()
    {
        var completion = new TaskCompletionSource<(SnapshotMetadata, CacheSnapshot)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var input = new LoopWorkInput(
            _ =>
            {
                // The followed membership, not the core's: while a snapshot's state is built, the core has taken that
                // snapshot's membership already, but the state captured here is still the one before it.
                var metadata = new SnapshotMetadata(_cache.AppliedIndex, _appliedTerm, _followedMembership);
                // A capture fails only as the loop stops: said as such, so that a backup or digest goes to another node.
                _captures.Begin(state => completion.TrySetResult((metadata, state)), reason => completion.TrySetException(new NodeStoppedException(reason)));
            },
            ex => completion.TrySetException(ex));
        if (!_inputs.Writer.TryWrite(input))
        {
            completion.SetException(new NodeStoppedException("the node is shutting down"));
        }

        return completion.Task;
    }

    CancellationToken IRaftInbox.Closing => _closing;

    /// <summary>Set by the host: cancelled when inbound streams must end (shutdown).</summary>
    public CancellationToken ClosingToken
    {
        set => _closing = value;
    }

    bool IRaftInbox.WasRemoved(ulong peer) => _addresses.WasRemoved(peer);

    void IRaftInbox.PeerAddressHeard(ulong peer, string address) => _addresses.Heard(peer, address);

    /// <summary>Peers' clock offsets, measured on the Raft streams; the transport stamps and reports the readings.</summary>
    public PeerClocks Clocks { get; }

    void IRaftInbox.PeerClockHeard(ulong peer, long readingMs, long echoMs, long echoHeldMs, long? clusterOffsetMs) =>
        Clocks.Heard(peer, readingMs, echoMs, clusterOffsetMs, echoHeldMs);

    void IRaftInbox.PeerEntryFormatHeard(ulong peer, byte format)
    {
        if (!_peerEntryFormats.TryGetValue(peer, out var known) || known != format)
        {
            _peerEntryFormats[peer] = format;
            Interlocked.Increment(ref _peerEntryFormatsChanged);
        }
    }

    // The channel is unbounded: a write fails only once it is completed, when the loop has stopped.
    bool IRaftInbox.TryPost(Message message, long readTimeMs) => _inputs.Writer.TryWrite(new PeerMessageInput(message, readTimeMs));

    IIncomingSnapshot IRaftInbox.BeginSnapshot(ulong peer, Message message)
    {
        try
        {
            var incoming = new IncomingSnapshot(this, message, _snapshots.BeginReceive(message.Snapshot!));
            Interlocked.Increment(ref _snapshotsReceiving);
            return incoming;
        }
        catch (StorageWriteException ex)
        {
            throw SnapshotStoreFailed(ex);
        }
    }

    /// <summary>
    /// The snapshot store cannot write durably (a full disk): it will not again in this process (FasterLog keeps the
    /// failure), so the node stops, as it does when its Raft log cannot. Otherwise a follower behind the leader's log
    /// would live on without ever installing the snapshot it needs. Returns the failure for the caller to throw.
    /// </summary>
    private StorageWriteException SnapshotStoreFailed(StorageWriteException failure)
    {
        _inputs.Writer.TryWrite(new SnapshotPersistedInput(null, failure));
        return failure;
    }

    void ITransportEvents.PeerUnreachable(ulong peer) => _inputs.Writer.TryWrite(new PeerUnreachableInput(peer));

    void ITransportEvents.SnapshotSent(ulong peer, ulong term, bool succeeded) => _inputs.Writer.TryWrite(new SnapshotSentInput(peer, term, succeeded));

    private long NowMs => _clock.GetUtcNow().ToUnixTimeMilliseconds();

    /// <summary>
    /// Milliseconds since the driver was made, on the monotonic clock: what request deadlines and the purge interval
    /// count in. On the wall clock, a step forward (NTP, an operator) failed every request in flight at the next tick,
    /// and a step back held them, and the purges, for as long as the step.
    /// </summary>
    private long MonotonicMs => (long)_clock.GetElapsedTime(_createdAt).TotalMilliseconds;

    /// <summary>
    /// The cluster's time as this node sees it: its own clock moved by the median offset of its voters' clocks (see
    /// <see cref="PeerClocks"/>). A leader stamps it on proposals (the state machine's only clock), so a leader whose
    /// clock is wrong does not expire keys early or age every session at once; reads judge expiry by the leader's
    /// (a follower's LOCAL reads by its own), so a node whose clock is wrong does not serve expired keys or hide live
    /// ones. The offset is recomputed at most every 100 ms
    /// (each tick asks, so what a leader publishes to its followers stays fresh), and at once in a new term, role or
    /// leader.
    /// </summary>
    private long ClusterNowMs()
    {
        var now = NowMs;
        var timestamp = _clock.GetTimestamp();
        if (_clock.GetElapsedTime(_stampOffsetComputedAt, timestamp) > StampOffsetRefresh || _stampOffsetTerm != _raft.Term || _stampOffsetRole != _raft.Role || _stampOffsetLeader != _raft.Leader)
        {
            // A leader takes the median of its voters; a follower, which hears no voter but its leader, takes the
            // leader's time plus the leader's correction, so that it judges expiry by the same time the leader stamps
            // with even when its own clock is behind (alone it would keep the earlier of two clocks, its own).
            var isLeader = _raft.Role == Role.Leader;
            var offset = !isLeader && _raft.Leader != 0 && Clocks.TryClusterOffsetVia(_raft.Leader, out var viaLeader)
                ? viaLeader
                : Clocks.StampOffsetMs(_raft.Membership.Voters, NodeId);
            Clocks.Publish(isLeader ? offset : null);
            if (Math.Abs(offset) >= ClockWarningMs && Math.Abs(_stampOffsetMs) < ClockWarningMs)
            {
                Log.OwnClockOff(_logger, -offset);
            }

            _stampOffsetMs = offset;
            _stampOffsetComputedAt = timestamp;
            _stampOffsetTerm = _raft.Term;
            _stampOffsetRole = _raft.Role;
            _stampOffsetLeader = _raft.Leader;
        }

        return now + _stampOffsetMs;
    }

    /// <summary>
    /// The one timeline linearizable operations take while this node leads: the cluster's time, but never earlier than
    /// the state machine's clock or than any time this node issued before, as a stamp, a read's time or the time of a
    /// ReadIndex answer. Stamps and reads share it, so a read is never judged earlier than a stamp issued before it, and
    /// a follower reading by a time the leader answered with is never judged earlier than a read the leader served
    /// before. Held rather than going back: relative TTLs are computed from the stamp while expiry is judged by the
    /// largest stamp applied, so a stamp that went back (the median dropping: a voter behind, another gone) would expire
    /// a short TTL on arrival, and a read time that went back would bring an expired key back or raise a TTL. The
    /// cluster's time goes back that way: each recomputation of the offsets is off by up to half a round trip,
    /// differently each time, and a stepped wall clock moves it until peers' readings correct it. A new leader starts at
    /// or above the state machine's clock (every stamp an earlier leader committed is applied before it serves a read)
    /// and the times earlier leaders' answers gave its own reads.
    /// </summary>
    private long LeaderTimeMs()
    {
        _timelineMs = Math.Max(ClusterNowMs(), Math.Max(_timelineMs, _cache.ClockMs));
        return _timelineMs;
    }

    /// <summary>The time a leader stamps on a proposal: its <see cref="LeaderTimeMs"/>.</summary>
    private long StampMs() => LeaderTimeMs();

    /// <summary>
    /// The time a linearizable read judges expiry by. On the leader, its <see cref="LeaderTimeMs"/> when it serves the
    /// read. On a follower, the leader's time: the largest of the times the leader's ReadIndex answers carried (each
    /// taken after the read asked, so no earlier than anything the leader issued before the read began, and no later
    /// than the leader's time now), the state machine's clock (stamps, all issued by leaders) and earlier reads here;
    /// never this node's own estimate of the cluster's time, which is off the leader's by the estimate's error, so that
    /// a key a read on the leader saw expired is not served by a later read here, nor the other way round.
    /// </summary>
    private long LinearizableReadTimeMs()
    {
        if (_raft.Role == Role.Leader)
        {
            return LeaderTimeMs();
        }

        _timelineMs = Math.Max(_timelineMs, _cache.ClockMs);
        return _timelineMs;
    }

    /// <summary>
    /// A follower got the leader's answer to a read-index request it is waiting for: the read's time moves up to the
    /// time the answer carried. A leader whose build predates that sends none; the follower then reads by its own
    /// estimate of the cluster's time, as builds before it did, which can differ from the leader's by the estimate's
    /// error.
    /// </summary>
    private void ReadIndexAnswered(long readTimeMs)
    {
        // Not the estimate before the cluster has given this node its time: that is its own clock (see LocalReadTimeMs).
        var estimate = ClusterNowMs();
        _timelineMs = Math.Max(_timelineMs, readTimeMs > 0 ? readTimeMs : Clocks.HasHeardClusterTime ? estimate : _cache.ClockMs);
    }

    /// <summary>
    /// The time a LOCAL read judges expiry by: on the leader its <see cref="LeaderTimeMs"/>; on a follower, its own
    /// estimate of the cluster's time (no round trip to ask the leader for its) once it has one, never earlier than the state machine's
    /// clock, a linearizable read here or an earlier local read here. It does not move the linearizable reads' time:
    /// an estimate ahead of the leader's would otherwise make later linearizable reads here judge by it. Never earlier
    /// than an earlier local read here in either role: a follower's estimate can be ahead of the time the same node
    /// keeps once it leads, and a key a local read here saw expired would come back.
    /// </summary>
    private long LocalReadTimeMs()
    {
        if (_raft.Role == Role.Leader)
        {
            _localReadMs = Math.Max(_localReadMs, LeaderTimeMs());
            return _localReadMs;
        }

        // Until the cluster has given this node its time (just restarted, its leader not yet heard), the estimate is its
        // own clock: one hours ahead would expire keys here for good, as a local read never judges earlier than one
        // before it. It judges by the times it knows the cluster had (the last stamp applied): stale, as a LOCAL read may
        // be, and caught up as soon as its leader is heard.
        var estimate = ClusterNowMs();
        var known = Math.Max(_localReadMs, Math.Max(_timelineMs, _cache.ClockMs));
        _localReadMs = Clocks.HasHeardClusterTime ? Math.Max(estimate, known) : known;
        return _localReadMs;
    }

    private const long ClockWarningMs = 500;
    private static readonly TimeSpan StampOffsetRefresh = TimeSpan.FromMilliseconds(100);
    private long _stampOffsetMs;
    private long _stampOffsetComputedAt;
    private ulong _stampOffsetTerm;
    private Role _stampOffsetRole;
    private ulong _stampOffsetLeader;
    // Linearizable operations' time: the leader's timeline (see LeaderTimeMs, LinearizableReadTimeMs).
    private long _timelineMs;
    private long _localReadMs;

    private async Task TickAsync()
    {
        using var timer = new PeriodicTimer(_settings.Tick, _clock);
        try
        {
            while (await timer.WaitForNextTickAsync(_stopping.Token).ConfigureAwait(false))
            {
                _inputs.Writer.TryWrite(TickInput.Instance);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void RunLoop()
    {
        var reader = _inputs.Reader;
        try
        {
            // While a long read or a snapshot capture has slices left the loop goes round without waiting for input, a
            // slice of each per round.
            while (_longReads.HasWork || _captures.HasWork ? !reader.Completion.IsCompleted : reader.WaitToReadAsync(_stopping.Token).AsTask().GetAwaiter().GetResult())
            {
                _stopping.Token.ThrowIfCancellationRequested();
                // Drain a bounded batch so one round's latency stays bounded under load.
                for (var i = 0; i < 4096 && reader.TryRead(out var input); i++)
                {
                    Handle(input);
                }

                RequestReadIndexForOpenGroup();
                ProcessReady();
                if (_longReads.HasWork)
                {
                    // Every round, not every tick: a read nobody waits for any more takes no slice it need not.
                    _longReads.DropUnwanted(MonotonicMs);
                    _longReads.RunSlice(LinearizableReadTimeMs(), LocalReadTimeMs());
                }

                if (_captures.HasWork)
                {
                    _captures.RunSlice();
                }

                if (_statusStale)
                {
                    // Published once per tick, or at once when the role or leader changed: not on every round.
                    _statusStale = false;
                    _status = BuildStatus();
                }
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            // The core or storage failed in a way that must not be papered over (corruption, a full disk): stop
            // the node. No input may wait for a loop that is gone: later commands are refused at once.
            Log.LoopFailed(_logger, ex);
            _inputs.Writer.TryComplete();
            _stopping.Cancel();
            throw;
        }
        finally
        {
            FailEverythingPending();
        }
    }

    private void Handle(DriverInput input)
    {
        switch (input)
        {
            case TickInput:
                _raft.Tick();
                OnTick();
                break;
            case PeerMessageInput peer:
                if (peer.Message is { Type: MessageType.ReadIndexResponse, Reject: false } answer && _readsAwaitingIndex.ContainsKey(answer.Context))
                {
                    ReadIndexAnswered(peer.ReadTimeMs);
                }

                _raft.Step(peer.Message);
                break;
            case CommandInput command:
                HandleCommand(command);
                break;
            case PeerUnreachableInput unreachable:
                _raft.ReportUnreachable(unreachable.Peer);
                break;
            case SnapshotSentInput sent when sent.Term == _raft.Term && _raft.Role == Role.Leader:
                _raft.ReportSnapshot(sent.Peer, sent.Succeeded);
                break;
            case SnapshotSentInput:
                // Sent by an earlier leadership of this node's: the peer's progress now belongs to this term's, and a
                // stale success could be taken for a snapshot sent since.
                break;
            case SnapshotReceivedInput received:
                _raft.Step(received.Message);
                break;
            case SnapshotPersistedInput { Failure: { } failure }:
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
                break;
            case SnapshotPersistedInput persisted:
                OnSnapshotPersisted(persisted.Metadata);
                break;
            case SnapshotBuiltInput built:
                OnSnapshotBuilt(built);
                break;
            case LoopWorkInput work:
                work.Run(_raft);
                break;
        }
    }

    /// <summary>Ticks the loop has handled (for tests that must know a tick has passed).</summary>
    internal long TicksHandled { get; private set; }

    private void OnTick()
    {
        TicksHandled++;
        _statusStale = true;
        var now = MonotonicMs;
        ExpireOverdueRequests(now);
        // Keeps the correction a leader publishes to its followers fresh, and withdraws it once this node stops leading.
        _ = ClusterNowMs();
        // Every interval; or at the next tick once the last purge has applied, while expired keys are left behind. A
        // purge proposed in an earlier term may never apply (another leader's entries replaced it, and without writes
        // the log need never reach its index again): only this term's last purge is waited for.
        if (_raft.Role == Role.Leader
            && (now - _lastPurgeProposalMs >= (long)_settings.ExpiryPurgeInterval.TotalMilliseconds || _purgeBehind)
            && (_cache.AppliedIndex >= _lastPurgeIndex || _lastPurgeTerm != _raft.Term))
        {
            _lastPurgeProposalMs = now;
            _purgeBehind = false;
            if (_cache.GetStatistics().KeysWithExpiry > 0)
            {
                ProposePurge();
            }
        }
    }

    /// <summary>
    /// Proposes a purge of at most <see cref="MaxKeysPerPurge"/> expired keys: one that stops at a key when more have
    /// expired, or, while a member's build reads only whole-millisecond purges (format 4 or older), one up to the
    /// millisecond of the last key, which that member applies as it always did.
    /// </summary>
    private void ProposePurge()
    {
        _encodeBuffer.ResetWrittenCount();
        var stamp = StampMs();
        var envelope = new CommandEnvelope(CommandEnvelope.NoSession, 0, stamp);
        var format = ProposalFormat();
        bool more;
        if (format < CacheCommand.PurgeThroughKeyVersion)
        {
            var horizon = _cache.PurgeHorizon(stamp, MaxKeysPerPurge);
            CacheCommand.EncodePurgeExpired(_encodeBuffer, envelope, horizon);
            more = horizon < stamp;
        }
        else if (_cache.FindPurgeCut(stamp, MaxKeysPerPurge) is { } cut)
        {
            CacheCommand.EncodePurgeExpiredThroughKey(_encodeBuffer, envelope, cut.ExpireAtMs, cut.LastKey.Span);
            more = true;
        }
        else
        {
            CacheCommand.EncodePurgeExpired(_encodeBuffer, envelope, stamp);
            more = false;
        }

        var proposed = _raft.Propose(EncodedEntry(format));
        if (proposed.Accepted)
        {
            ProposedAt(proposed.Index);
            _lastPurgeIndex = proposed.Index;
            _lastPurgeTerm = proposed.Term;
            _purgeBehind = more;
        }
    }

    private void HandleCommand(CommandInput input)
    {
        var command = input.Command;
        if (WriteEncoder.Validate(command) is { } invalid)
        {
            input.Replies.Complete(invalid.StartsWith("ERR ", StringComparison.Ordinal)
                ? new Proto.Reply { Id = command.Id, Error = invalid }
                : ReplyFactory.Failure(command.Id, Proto.FailureKind.InvalidRequest, invalid));
            return;
        }

        if (!_raft.Membership.Contains(NodeId))
        {
            // Removed, or joining and not yet added: its log and leader are not the cluster's. No leader hint either,
            // since a removed node's last known leader may itself be gone, and clients would bounce between the two.
            input.Replies.Complete(ReplyFactory.Failure(command.Id, Proto.FailureKind.Unavailable,
                $"not applied: node {NodeId} is not a member of the cluster (removed, or not yet added)"));
            return;
        }

        if (command.IsWrite)
        {
            Propose(input);
        }
        else if (command.Consistency == Proto.ReadConsistency.Local || _settings.TestOnlyUnsafeReads)
        {
            if (_longReads.Serve(input, LocalReadTimeMs()) is { } reply)
            {
                input.Replies.Complete(reply);
            }
        }
        else
        {
            _openReadGroup.Add(input);
        }
    }

    private void Propose(CommandInput input)
    {
        var command = input.Command;
        if (_raft.Role != Role.Leader)
        {
            if (command.ForwardToLeader && _forwarder is not null && _raft.Leader is var leader and not 0 && leader != NodeId
                && input.DeadlineMs > MonotonicMs)
            {
                if (_addresses.Find(leader) is not { } address)
                {
                    // A NotLeader without an address would send the gateway straight back here, with no backoff.
                    input.Replies.Complete(ReplyFactory.Failure(command.Id, Proto.FailureKind.Unavailable,
                        $"not applied: node {leader} leads, but node {NodeId} knows no address for it to forward the write to"));
                    return;
                }

                // The gateway cannot reach the leader: this follower sends the write on, once (the flag is cleared).
                _forwarder.Forward(command, leader, address, TimeSpan.FromMilliseconds(input.DeadlineMs - MonotonicMs), input.Replies);
                return;
            }

            input.Replies.Complete(NotLeader(command.Id));
            return;
        }

        // Read once: a member heard again meanwhile may change it, and the entry must be written in the format checked.
        var format = ProposalFormat();
        if (command.OpCase == Proto.Command.OpOneofCase.RegisterSession && format < CacheCommand.SessionRegistrationVersion)
        {
            // A member's build cannot read registrations yet (a rolling upgrade): the session starts with its first
            // write, as it did before registrations existed.
            input.Replies.Complete(new Proto.Reply { Id = command.Id, Nil = true });
            return;
        }

        var (kind, name) = WriteEncoder.KindOf(command);
        if (CacheCommand.MinimumFormatVersion(kind) is var needed && format < needed)
        {
            // A member would stop at an entry kind its build does not know: refuse the command, propose nothing.
            input.Replies.Complete(new Proto.Reply
            {
                Id = command.Id,
                Error = $"ERR {name} needs every node on a build that reads log format {needed} (a rolling upgrade is in progress)",
            });
            return;
        }

        _encodeBuffer.ResetWrittenCount();
        WriteEncoder.Encode(command, StampMs(), _encodeBuffer);
        if (_encodeBuffer.WrittenCount > _settings.MaxEntryBytes)
        {
            // Followers could never receive a larger entry, or no node could store it (a Raft log page): the log would
            // stop committing behind it, or every node would stop as it saved it.
            input.Replies.Complete(new Proto.Reply
            {
                Id = command.Id,
                Error = $"ERR command too large: its log entry would be {_encodeBuffer.WrittenCount} bytes, over the cluster's limit of {_settings.MaxEntryBytes} (Dcache:Node:MaxMessageBytes less header room, and at most a Raft log page less its headers)",
            });
            return;
        }

        var result = _raft.Propose(EncodedEntry(format));
        _metrics.Proposed(result.Status);
        switch (result.Status)
        {
            case ProposeStatus.Accepted:
                _changesAwaitingApply.Displace(result.Index);
                _writes.Add(result.Index, new PendingWrite(result.Term, input));
                break;
            case ProposeStatus.NotLeader:
                input.Replies.Complete(NotLeader(command.Id));
                break;
            default:
                input.Replies.Complete(ReplyFactory.Failure(command.Id, Proto.FailureKind.Unavailable, $"not applied: {result.Status} {result.Reason}".TrimEnd(), result.LeaderHint, _addresses.Find(result.LeaderHint)));
                break;
        }
    }

    /// <summary>The entry just encoded, marked as <paramref name="format"/> (<see cref="ProposalFormat"/>, read once per entry).</summary>
    private byte[] EncodedEntry(byte format)
    {
        var entry = _encodeBuffer.WrittenSpan.ToArray();
        CacheCommand.SetFormatVersion(entry, format);
        return entry;
    }

    /// <summary>
    /// The newest format every member reads: a member whose build predates the format header counts as reading version
    /// 1, and one not heard from since this node started as reading the newest format this node knows the log to hold
    /// (<see cref="UnheardMemberFormat"/>). So during a rolling upgrade the leader keeps writing what the old members
    /// apply, and moves to the new format once all of them run it; and once it has, a member that is down does not take
    /// the cluster back to an older format (and refuse what needs the newer one) after the leader restarts.
    /// </summary>
    private byte ProposalFormat()
    {
        var membership = _raft.Membership;
        var changes = Volatile.Read(ref _peerEntryFormatsChanged);
        var unheard = UnheardMemberFormat();
        if (!ReferenceEquals(membership, _proposalFormatMembership) || changes != _proposalFormatComputedAt || unheard != _proposalFormatUnheard)
        {
            _proposalFormatMembership = membership;
            _proposalFormatComputedAt = changes;
            _proposalFormatUnheard = unheard;
            _proposalFormat = Math.Max(Math.Min(OldestReadFormat(membership.Voters, unheard), OldestReadFormat(membership.Learners, unheard)), CacheCommand.OldestFormatVersion);
        }

        return _proposalFormat;
    }

    /// <summary>
    /// What a member not heard from since this node started counts as reading: the newest format this node knows the
    /// log to hold, since a member that reads less cannot follow the log whatever the leader writes next; while it knows
    /// of none, the format its data directory was founded with, so that a new cluster one of whose founders has never
    /// come up does not write format 1 (and refuse MULTI/EXEC, WATCH, COPY ...) for ever. The log, once it says
    /// anything, wins: a founder first started on a newer build than the cluster's founded its directory with that
    /// build's format, which the others may not read (at least 1).
    /// </summary>
    private byte UnheardMemberFormat()
    {
        var known = _cache.NewestFormatApplied;
        var assumed = known > 0 ? known : Math.Min(_settings.FoundingEntryFormat, CacheCommand.FormatVersion);
        return Math.Max(assumed, CacheCommand.OldestFormatVersion);
    }

    private byte OldestReadFormat(ImmutableSortedSet<ulong> members, byte unheard)
    {
        var format = CacheCommand.FormatVersion;
        foreach (var member in members)
        {
            if (member != NodeId)
            {
                format = Math.Min(format, _peerEntryFormats.TryGetValue(member, out var heard) ? heard : unheard);
            }
        }

        return format;
    }

    /// <summary>Test inspection (read it on the loop): the context of the latest read-index request.</summary>
    internal ulong LastReadContext => _nextReadContext;

    private void RequestReadIndexForOpenGroup()
    {
        if (_openReadGroup.Count == 0)
        {
            return;
        }

        var context = ++_nextReadContext;
        _readsAwaitingIndex[context] = _openReadGroup;
        _openReadGroup = new ReadGroup();
        _raft.ReadIndex(context);
    }

    private Proto.Reply NotLeader(ulong id)
    {
        var leader = _raft.Leader;
        return ReplyFactory.Failure(id, leader == 0 ? Proto.FailureKind.Unavailable : Proto.FailureKind.NotLeader,
            leader == 0 ? "not applied: no leader is known" : $"not applied: node {leader} leads", leader, _addresses.Find(leader));
    }

    private void ProcessReady()
    {
        // The core gives no Ready while one is out (HasReady is false): while a snapshot's state is being built, none.
        while (_installed is not null || _raft.HasReady())
        {
            var ready = _installed ?? _raft.GetReady();
            if (_installed is null)
            {
                PersistAndSend(ready);
                if (ready.Snapshot is { } installed)
                {
                    // 3. Apply, the snapshot first: its state is built off the loop, and the rest of this Ready waits
                    // for it (OnSnapshotBuilt), so that nothing is applied to the old state past the snapshot.
                    BeginInstallSnapshot(installed, ready);
                    return;
                }
            }

            _installed = null;

            // 3. Apply.
            foreach (var entry in ready.CommittedEntries)
            {
                Apply(entry);
            }

            if (ready.SoftState is { } soft)
            {
                _statusStale = true;
                if (soft.Role != Role.Leader && _leadership is { } ended)
                {
                    _leadership = null;
                    ended.Cancel();
                    ended.Dispose();
                }

                Log.RoleChanged(_logger, soft.Role, soft.Leader, _raft.Term);
                if (soft.Leader != _lastLeader)
                {
                    _lastLeader = soft.Leader;
                    // An election passes through "no leader" (0) on its way to the next one: counting that step too
                    // would show every leader change twice.
                    if (soft.Leader != 0)
                    {
                        _metrics.LeaderChanged();
                    }

                    _forwarder?.LeaderIs(soft.Leader == NodeId ? null : _addresses.Find(soft.Leader));
                }
            }

            // 4. Reads.
            foreach (var read in ready.ReadStates)
            {
                if (_readsAwaitingIndex.Remove(read.Context, out var group))
                {
                    foreach (var input in group)
                    {
                        _readsAwaitingApply.Enqueue(input, read.Index);
                    }
                }
            }

            foreach (var dropped in ready.DroppedReads)
            {
                if (_readsAwaitingIndex.Remove(dropped, out var group))
                {
                    foreach (var input in group)
                    {
                        input.Replies.Complete(ReplyFactory.Failure(input.Command.Id, Proto.FailureKind.Unavailable, "read not served: leadership changed; retry"));
                    }
                }
            }

            _raft.Advance(ready);
            FollowMembership(asOf: _raft.AppliedIndex);
            ServeReadsUpTo(_raft.AppliedIndex);
            _deferredReplies.Flush();
            MaybeTakeSnapshot();
        }
    }

    /// <summary>Steps 1 and 2 of a Ready.</summary>
    private void PersistAndSend(Ready ready)
    {
        // A leader's appends go to the peers' send queues first: the followers receive and write them while this
        // node's own durable commit runs.
        foreach (var message in ready.MessagesBeforePersistence)
        {
            _transport!.Send(message);
        }

        // 1. Persist: one durable commit for the snapshot marker, entries and hard state.
        if (ready.MustSync)
        {
            var started = _clock.GetTimestamp();
            _storage.Save(ready.HardState, ready.Entries, ready.Snapshot);
            _metrics.DurableCommit(_clock.GetElapsedTime(started));
        }
        else if (ready.MustPersist)
        {
            // Only the commit index moved: written, not waited for.
            _storage.Save(ready.HardState, ready.Entries, ready.Snapshot);
        }

        // 2. Send.
        foreach (var message in ready.Messages)
        {
            if (message.Type == MessageType.Snapshot)
            {
                SendSnapshot(message);
            }
            else if (message is { Type: MessageType.ReadIndexResponse, Reject: false })
            {
                // Taken now, after the round that confirmed this node's leadership and before the follower serves:
                // a time within the read, on the timeline this node's stamps and reads take.
                _transport!.Send(message, LeaderTimeMs());
            }
            else
            {
                _transport!.Send(message);
            }
        }
    }

    private void Apply(Entry entry)
    {
        while (_changesAwaitingApply.TryTake(entry.Index, out var proposed))
        {
            // Completed after Advance, once the core's membership includes the change.
            _changesApplied.Add((proposed.Completion, proposed.Term == entry.Term));
        }

        CacheReply? reply = null;
        if (entry.Type == EntryType.ConfChange)
        {
            _cache.SkipEntry(entry.Index);
            var change = ConfChange.Decode(entry.Data.Span);
            if (change.Type == ConfChangeType.UpdateContext)
            {
                Log.MemberMoved(_logger, entry.Index, change.NodeId, change.Context);
            }
            else
            {
                Log.MembershipChangeApplied(_logger, entry.Index, change.Type, change.NodeId);
            }
        }
        else
        {
            reply = _cache.Apply(entry.Index, entry.Data.Span);
        }

        // A write's own entry is never a membership change: another leader's change took its place.
        while (_writes.TryTake(entry.Index, out var pending))
        {
            var id = pending.Input.Command.Id;
            _deferredReplies.Add(pending.Input.Replies, pending.Term == entry.Term && reply is { } applied ? ReplyFactory.FromCache(id, applied) : Superseded(id));
        }

        _appliedTerm = entry.Term;
    }

    private static Proto.Reply Superseded(ulong id) =>
        ReplyFactory.Failure(id, Proto.FailureKind.Unavailable, "not applied: another leader's entry took its place; retry");

    /// <summary>
    /// This node, leading, has just proposed an entry at <paramref name="index"/>. A write or membership change it
    /// proposed at that index in an earlier term is no longer in its log (another leader's entries replaced it), but
    /// that does not make it "not applied": with five voters or more, a node still holding the replaced entry can be
    /// elected and commit it. It waits, displaced, for the apply of its index (which says whether it applied), its
    /// deadline, or a snapshot covering it (<see cref="ProposalsAwaitingApply{T}"/>).
    /// </summary>
    private void ProposedAt(ulong index)
    {
        _writes.Displace(index);
        _changesAwaitingApply.Displace(index);
    }

    private void ServeReadsUpTo(ulong applied)
    {
        if (_readsAwaitingApply.Count == 0)
        {
            return;
        }

        var now = LinearizableReadTimeMs();
        while (_readsAwaitingApply.TryPeek(out var input, out var index) && index <= applied)
        {
            _readsAwaitingApply.Dequeue();
            if (_longReads.Serve(input, now) is { } reply)
            {
                _deferredReplies.Add(input.Replies, reply);
            }
        }
    }

    private void ExpireOverdueRequests(long now)
    {
        if (!_writes.IsEmpty)
        {
            foreach (var (index, pending) in _writes.RemoveWhere((_, pending) => pending.Input.DeadlineMs <= now))
            {
                pending.Input.Replies.Complete(ReplyFactory.Failure(pending.Input.Command.Id, Proto.FailureKind.OutcomeUnknown,
                    $"outcome unknown: proposed at index {index} but not seen applied in time; it may still apply"));
            }
        }

        if (_readsAwaitingIndex.Count > 0)
        {
            List<ulong>? emptied = null;
            foreach (var (context, group) in _readsAwaitingIndex)
            {
                group.RemoveAll(input =>
                {
                    if (input.DeadlineMs > now)
                    {
                        return false;
                    }

                    input.Replies.Complete(ReplyFactory.Failure(input.Command.Id, Proto.FailureKind.Unavailable, "read timed out waiting for the leader to confirm its read index"));
                    return true;
                });
                if (group.Count == 0)
                {
                    (emptied ??= []).Add(context);
                }
            }

            foreach (var context in emptied ?? [])
            {
                _readsAwaitingIndex.Remove(context);
                _raft.AbandonRead(context);
            }
        }

        ExpireReadsAwaitingApply(now);
    }

    /// <summary>
    /// Fails the reads whose read index this node has not applied by their deadline: cut off from its leader right after
    /// the answer, it may not apply that far for a long time, and each such read would otherwise be held (and its client
    /// left without an answer) until it does.
    /// </summary>
    private void ExpireReadsAwaitingApply(long now)
    {
        var anyOverdue = false;
        foreach (var (input, _) in _readsAwaitingApply.UnorderedItems)
        {
            anyOverdue |= input.DeadlineMs <= now;
        }

        if (!anyOverdue)
        {
            return;
        }

        var waiting = _readsAwaitingApply.UnorderedItems.ToList();
        _readsAwaitingApply.Clear();
        foreach (var (input, index) in waiting)
        {
            if (input.DeadlineMs <= now)
            {
                input.Replies.Complete(ReplyFactory.Failure(input.Command.Id, Proto.FailureKind.Unavailable,
                    $"read timed out waiting for this node to apply up to its read index {index} (applied: {_raft.AppliedIndex})"));
            }
            else
            {
                _readsAwaitingApply.Enqueue(input, index);
            }
        }
    }

    /// <summary>
    /// Takes a snapshot once enough entries were applied since the last. The state at this applied index is captured on
    /// the loop a slice per round (references to immutable keys and values; writes apply between slices), written to
    /// the store on another thread, and only then does the loop let the Raft log be compacted behind it.
    /// </summary>
    private void MaybeTakeSnapshot()
    {
        // Not while the core has another Ready: it may hold a snapshot from the leader that it accepted after handing
        // out the Ready just applied, and its membership is then that snapshot's, ahead of the applied index. The last
        // Ready of the round gets here with none pending.
        var applied = _raft.AppliedIndex;
        if (_snapshotInProgress || applied - _lastSnapshotIndex < _settings.SnapshotEntries || _cache.AppliedIndex != applied || applied < _replayedMembershipIndex
            || _raft.HasReady() || Volatile.Read(ref _snapshotsReceiving) > 0)
        {
            return;
        }

        _snapshotInProgress = true;
        var started = _clock.GetTimestamp();
        var metadata = new SnapshotMetadata(applied, _appliedTerm, _followedMembership);
        _automaticCapture = _captures.Begin(
            capture =>
            {
                _automaticCapture = null;
                var stopping = _stopping.Token;
                _persisting = Task.Run(() => PersistSnapshot(metadata, capture, started, stopping));
            },
            reason =>
            {
                _metrics.SnapshotFailed();
                Log.SnapshotFailed(_logger, metadata.Index, reason);
            });
    }

    /// <summary>
    /// Writes a captured snapshot to the store (on the thread pool), then tells the loop. A stop abandons it at the next
    /// chunk (<paramref name="stopping"/>): writing a few million keys takes seconds, and the node's stop would wait for
    /// them, while the next start needs nothing of it (it loads the previous snapshot and replays the log after it).
    /// </summary>
    private void PersistSnapshot(SnapshotMetadata metadata, CacheSnapshot capture, long started, CancellationToken stopping)
    {
        try
        {
            _snapshots.Save(metadata, stream => capture.WriteTo(stream), stopping);
            var elapsed = _clock.GetElapsedTime(started);
            _metrics.SnapshotWritten(elapsed, _snapshots.Find(metadata.Index)?.Length ?? 0);
            Log.SnapshotTaken(_logger, metadata.Index, metadata.Term, capture.KeyCount, elapsed);
            _inputs.Writer.TryWrite(new SnapshotPersistedInput(metadata));
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // The loop has stopped: nobody waits for this snapshot, and the log behind it was not compacted.
            Log.SnapshotAbandonedOnStop(_logger, metadata.Index);
        }
        catch (StorageWriteException ex)
        {
            SnapshotStoreFailed(ex);
        }
        catch (SnapshotStoreBusyException)
        {
            // A snapshot arriving from the leader began being written after this capture did: it replaces this one. Not
            // a failure (the metric's alert is for those); no capture begins while one is received.
            Log.SnapshotSkippedWhileReceiving(_logger, metadata.Index);
            _inputs.Writer.TryWrite(new SnapshotPersistedInput(null));
        }
        catch (Exception ex)
        {
            // E.g. the catalogue could not be written: try again after more entries. Whatever it was, the loop hears of
            // it, or it would wait for this snapshot for good and never take another.
            _metrics.SnapshotFailed();
            Log.SnapshotFailed(_logger, metadata.Index, ex.Message);
            _inputs.Writer.TryWrite(new SnapshotPersistedInput(null));
        }
    }

    private void OnSnapshotPersisted(SnapshotMetadata? metadata)
    {
        _snapshotInProgress = false;
        if (metadata is null || metadata.Index <= _storage.Snapshot.Index)
        {
            return;
        }

        var compactTo = metadata.Index > _settings.SnapshotCatchUpEntries ? metadata.Index - _settings.SnapshotCatchUpEntries : 0;
        _storage.CreateSnapshot(metadata, compactTo);
        _lastSnapshotIndex = Math.Max(_lastSnapshotIndex, metadata.Index);
    }

    private void SendSnapshot(Message message)
    {
        var index = message.Snapshot!.Index;
        var stored = _snapshots.Find(index);
        if (stored is null)
        {
            Log.SnapshotMissing(_logger, index, message.To);
            _raft.ReportSnapshot(message.To, succeeded: false);
            return;
        }

        // A chunk travels as one message: no larger than an item of one (256 KiB unless the limit is lower).
        _leadership ??= new CancellationTokenSource();
        _transport!.SendSnapshot(message, new StoredSnapshotSource(stored, Math.Min(256 * 1024, _settings.MaxEntryBytes)), _leadership.Token);
    }

    /// <summary>
    /// Starts installing a snapshot from the leader: parsing it and building its state is O(keys), seconds at a few
    /// million, so it runs on the thread pool while the loop goes on ticking and stepping messages; the state is
    /// swapped in, in O(1), when it is built (<see cref="OnSnapshotBuilt"/>). Until then <paramref name="ready"/> is not
    /// advanced: the core does not count the snapshot applied, gives no other Ready, and so nothing is applied, and no
    /// read served, past the old state's index.
    /// </summary>
    private void BeginInstallSnapshot(SnapshotMetadata metadata, Ready ready)
    {
        var stored = _snapshots.Find(metadata.Index)
            ?? throw new InvalidOperationException($"snapshot {metadata.Index} was accepted by Raft but is not in the snapshot store");
        if (_automaticCapture is { } superseded)
        {
            // Its state is older than the one installed, and the log is compacted to the installed one: not worth writing.
            _captures.Abandon(superseded);
            _automaticCapture = null;
            _snapshotInProgress = false;
        }

        _installing = ready;
        var options = _cache.Options;
        var stopping = _stopping.Token;
        _building = Task.Run(() =>
        {
            try
            {
                using var stream = stored.OpenRead();
                _inputs.Writer.TryWrite(new SnapshotBuiltInput(metadata, CacheStateMachine.FromSnapshot(stream, options, stopping), null));
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                // The loop has stopped and nobody takes the state; the next start loads the stored snapshot again.
                Log.SnapshotBuildAbandonedOnStop(_logger, metadata.Index);
            }
            catch (Exception ex)
            {
                _inputs.Writer.TryWrite(new SnapshotBuiltInput(metadata, null, ex));
            }
        });
    }

    private void OnSnapshotBuilt(SnapshotBuiltInput built)
    {
        if (built.Cache is null)
        {
            // A stored snapshot that cannot be read (corrupt, unreadable): the node must stop, as when it failed on the loop.
            throw new InvalidOperationException($"snapshot {built.Metadata.Index} from the leader could not be loaded: {built.Error!.Message}", built.Error);
        }

        _cache.ReplaceState(built.Cache);
        AnswerProposalsCoveredBy(built.Metadata.Index);
        _lastSnapshotIndex = built.Metadata.Index;
        _appliedTerm = built.Metadata.Term;
        _metrics.SnapshotInstalled();
        Log.SnapshotInstalled(_logger, built.Metadata.Index, built.Metadata.Term, _cache.StoredKeyCount);
        // The rest of the Ready that brought it is applied and advanced now, before any other input: until then the
        // followed membership and the status are still the old state's, and a capture would label this state with them.
        _installed = _installing;
        _installing = null;
        ProcessReady();
    }

    /// <summary>
    /// A snapshot from the leader, up to <paramref name="snapshotIndex"/>, has replaced the state: the entries it covers are
    /// never applied here one by one, so a write or membership change this node proposed at one of them (leading an
    /// earlier term) is answered now, as of unknown outcome: it may or may not be in the snapshot. Otherwise the write
    /// waited for its deadline, and the change, which has none on the loop, stayed waiting for good.
    /// </summary>
    private void AnswerProposalsCoveredBy(ulong snapshotIndex)
    {
        foreach (var (index, pending) in _writes.RemoveWhere((index, _) => index <= snapshotIndex))
        {
            pending.Input.Replies.Complete(ReplyFactory.Failure(pending.Input.Command.Id, Proto.FailureKind.OutcomeUnknown,
                $"outcome unknown: proposed at index {index}, which a snapshot from the leader (up to index {snapshotIndex}) replaced here; it may have applied"));
        }

        foreach (var (index, change) in _changesAwaitingApply.RemoveWhere((index, _) => index <= snapshotIndex))
        {
            change.Completion.TrySetException(new InvalidOperationException(
                $"the change was proposed at index {index}, which a snapshot from the leader (up to index {snapshotIndex}) replaced on this node; it may have applied"));
        }
    }

    /// <summary>Keeps the address book on the applied membership (addresses travel in it), and completes the membership changes just applied.</summary>
    private void FollowMembership(ulong asOf)
    {
        if (!ReferenceEquals(_raft.Membership, _followedMembership))
        {
            var previous = _followedMembership;
            if (previous.Contains(NodeId) && !_raft.Membership.Contains(NodeId))
            {
                Log.RemovedFromCluster(_logger, NodeId, _raft.Membership.ToString());
            }

            _followedMembership = _raft.Membership;
            _addresses.Follow(_followedMembership);
            _recordMembership(asOf, _followedMembership);
            _statusStale = true;
            foreach (var moved in _followedMembership.UpdatedContexts)
            {
                if (moved != NodeId && previous.Contains(moved) && previous.ContextOf(moved) != _followedMembership.ContextOf(moved))
                {
                    // The transport has dropped the old connection and what was queued on it: the core must not wait
                    // for acknowledgements of Appends that will never arrive, but probe the member at its new address.
                    _raft.ReportUnreachable(moved);
                }
            }
        }

        foreach (var (completion, applied) in _changesApplied)
        {
            completion.TrySetResult(applied);
        }

        _changesApplied.Clear();
    }

    /// <summary>
    /// Proposes a membership change unless <paramref name="refuse"/> (run on the loop, against the core's current
    /// state) gives a reason not to. When accepted, Applied completes once the change is committed and applied
    /// here (true), or another entry took its index (false).
    /// </summary>
    public Task<(ProposeResult Proposal, string? Refusal, Task<bool>? Applied)> ProposeConfChangeAsync(ConfChange change, Func<RaftNode, string?> refuse) =>
        RunOnLoopAsync<(ProposeResult Proposal, string? Refusal, Task<bool>? Applied)>(raft =>
        {
            if (raft.Role == Role.Leader && (refuse(raft) ?? RefuseForOlderMembers(change)) is { } refusal)
            {
                return (new ProposeResult(ProposeStatus.InvalidConfChange, 0, 0, raft.Id, refusal), refusal, null);
            }

            var result = raft.ProposeConfChange(change);
            _metrics.Proposed(result.Status);
            if (!result.Accepted)
            {
                return (result, result.Reason, null);
            }

            _writes.Displace(result.Index);
            var completion = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            _changesAwaitingApply.Add(result.Index, (result.Term, completion));
            return (result, null, completion.Task);
        });

    /// <summary>
    /// Why <paramref name="change"/> must not be proposed yet, or null: a member whose build reads only an older log
    /// format would skip a change kind it does not know (and keep, say, dialling a moved member's old address) instead
    /// of applying it, so such a change waits until every member has said it reads the format that brought it.
    /// </summary>
    private string? RefuseForOlderMembers(ConfChange change)
    {
        var needed = change.Type == ConfChangeType.UpdateContext ? CacheCommand.MemberUpdateVersion : CacheCommand.OldestFormatVersion;
        if (ProposalFormat() >= needed)
        {
            return null;
        }

        var unheard = UnheardMemberFormat();
        var older = _raft.Membership.All
            .Where(member => member != NodeId)
            .Select(member => (Id: member, Heard: _peerEntryFormats.TryGetValue(member, out var format) ? format : (byte)0))
            .Where(member => (member.Heard == 0 ? unheard : member.Heard) < needed)
            .Select(member => member.Heard == 0 ? $"node {member.Id} (not heard from since this node started)" : $"node {member.Id} (reads format {member.Heard})");
        return $"moving a member to a new address needs every member on a build that reads log format {needed} (a rolling upgrade is in progress); not yet: {string.Join(", ", older)}";
    }

    /// <summary>
    /// Starts handing leadership to <paramref name="target"/>, or (0) to the voter best placed to take over (<see cref="RaftNode.TransferCandidate"/>).
    /// Returns the chosen target, or 0 when this node does not lead or no voter can take over.
    /// </summary>
    public Task<ulong> TransferLeadershipAsync(ulong target) =>
        RunOnLoopAsync(raft =>
        {
            if (raft.Role != Role.Leader)
            {
                return 0UL;
            }

            if (target == 0)
            {
                target = raft.TransferCandidate();
            }

            return target != 0 && raft.TransferLeadership(target) ? target : 0UL;
        });

    /// <summary>Waits (at most <paramref name="timeout"/>) until the published status satisfies <paramref name="condition"/>; false on timeout.</summary>
    public async Task<bool> WaitForStatusAsync(Func<NodeStatusView, bool> condition, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = _clock.GetUtcNow() + timeout;
        while (!condition(Status))
        {
            if (_clock.GetUtcNow() >= deadline)
            {
                return false;
            }

            try
            {
                // The status is republished every tick: poll at that pace.
                await Task.Delay(_settings.Tick, _clock, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return condition(Status);
            }
        }

        return true;
    }

    private void FailEverythingPending()
    {
        // Replies of entries applied before the loop stopped are their real outcomes.
        _deferredReplies.Flush();
        foreach (var (_, change) in _changesAwaitingApply.RemoveAll())
        {
            change.Completion.TrySetException(new InvalidOperationException("the node stopped before the membership change was seen applied; it may still apply"));
        }

        foreach (var (_, pending) in _writes.RemoveAll())
        {
            pending.Input.Replies.Complete(ReplyFactory.Failure(pending.Input.Command.Id, Proto.FailureKind.OutcomeUnknown, "outcome unknown: the node stopped before the write was seen applied"));
        }

        foreach (var input in _readsAwaitingIndex.Values.SelectMany(group => group).Concat(_openReadGroup))
        {
            input.Replies.Complete(ReplyFactory.Failure(input.Command.Id, Proto.FailureKind.Unavailable, "the node stopped"));
        }

        while (_readsAwaitingApply.TryDequeue(out var input, out _))
        {
            input.Replies.Complete(ReplyFactory.Failure(input.Command.Id, Proto.FailureKind.Unavailable, "the node stopped"));
        }

        _longReads.FailAll("the node stopped");
        _captures.FailAll("the node stopped");

        while (_inputs.Reader.TryRead(out var input))
        {
            switch (input)
            {
                case CommandInput command:
                    command.Replies.Complete(ReplyFactory.Failure(command.Command.Id, Proto.FailureKind.Unavailable, "not applied: the node stopped"));
                    break;
                case LoopWorkInput work:
                    work.Fail(new NodeStoppedException("the node stopped"));
                    break;
            }
        }

        _readsAwaitingIndex.Clear();
    }

    private NodeStatusView BuildStatus()
    {
        var status = _raft.GetStatus();
        return new NodeStatusView(NodeId, status.Role, status.Term, status.Leader, status.Commit, status.Applied, _storage.FirstIndex, status.LastIndex, status.Membership, status.Progress, _cache.GetStatistics());
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _inputs.Writer.TryComplete();
        await _stopping.CancelAsync().ConfigureAwait(false);
        foreach (var task in new[] { _loop, _ticker })
        {
            if (task is null)
            {
                continue;
            }

            try
            {
                await task.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception) when (task == _loop)
            {
                // The loop's failure was logged when it happened and is what stopped the node; disposal goes on.
            }
        }

        // The loop has ended, so no more is started, and the snapshot being written saw _stopping at its next chunk and
        // is abandoned. Both catch what they meet. The bound is a last resort (a disk that takes seconds for one chunk or
        // commit): a snapshot not done by then is cut short when storage closes (it is never catalogued, and the next
        // start replays the log instead).
        var snapshotWork = Task.WhenAll(_persisting, _building);
        if (await Task.WhenAny(snapshotWork, Task.Delay(SnapshotWorkStopBound, _clock)).ConfigureAwait(false) != snapshotWork)
        {
            Log.SnapshotWorkOutlivedStop(_logger, SnapshotWorkStopBound);
        }

        _stopping.Dispose();
    }

    /// <summary>Receives a snapshot's chunks into the store, then hands its message to the loop.</summary>
    private sealed class IncomingSnapshot(RaftDriver driver, Message message, IReceivedSnapshotWriter writer) : IIncomingSnapshot
    {
        public ValueTask WriteAsync(ReadOnlyMemory<byte> chunk, CancellationToken cancellationToken)
        {
            try
            {
                cancellationToken.ThrowIfCancellationRequested();
                writer.Write(chunk.Span);
            }
            catch (StorageWriteException ex)
            {
                throw driver.SnapshotStoreFailed(ex);
            }

            return ValueTask.CompletedTask;
        }

        public ValueTask CompleteAsync(ulong checksum, CancellationToken cancellationToken)
        {
            try
            {
                cancellationToken.ThrowIfCancellationRequested();
                writer.Commit(checksum);
            }
            catch (StorageWriteException ex)
            {
                throw driver.SnapshotStoreFailed(ex);
            }

            return driver._inputs.Writer.TryWrite(new SnapshotReceivedInput(message))
                ? ValueTask.CompletedTask
                : ValueTask.FromException(new InvalidOperationException("the node stopped before it could install the snapshot"));
        }

        private int _disposed;

        public ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                writer.Dispose();
                Interlocked.Decrement(ref driver._snapshotsReceiving);
            }

            return ValueTask.CompletedTask;
        }
    }

    private sealed class StoredSnapshotSource(StoredSnapshot stored, int chunkBytes) : ISnapshotSource
    {
        public SnapshotMetadata Metadata => stored.Metadata;

        public ulong Checksum => stored.Checksum;

        public async IAsyncEnumerable<ReadOnlyMemory<byte>> ReadChunksAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
        {
            var buffer = new byte[chunkBytes];
            await using var stream = stored.OpenRead();
            int read;
            while ((read = await stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                yield return buffer.AsMemory(0, read);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Warning, Message = "This node's wall clock is {OffsetMs} ms off the median of its voters' clocks; it uses their time for expiries and sessions instead. Synchronise the clocks (NTP)")]
        public static partial void OwnClockOff(ILogger logger, long offsetMs);

        [LoggerMessage(Level = LogLevel.Information, Message = "Node {NodeId} started: term {Term}, commit {Commit}, last index {LastIndex}, snapshot {SnapshotIndex}; replaying committed entries")]
        public static partial void Restarted(ILogger logger, ulong nodeId, ulong term, ulong commit, ulong lastIndex, ulong snapshotIndex);

        [LoggerMessage(Level = LogLevel.Information, Message = "Loaded snapshot {Index} (term {Term}) with {Keys} keys")]
        public static partial void SnapshotLoaded(ILogger logger, ulong index, ulong term, int keys);

        [LoggerMessage(Level = LogLevel.Information, Message = "Now {Role}; leader {Leader}, term {Term}")]
        public static partial void RoleChanged(ILogger logger, Role role, ulong leader, ulong term);

        [LoggerMessage(Level = LogLevel.Information, Message = "Membership change at index {Index} applied: {Change} node {Node}")]
        public static partial void MembershipChangeApplied(ILogger logger, ulong index, ConfChangeType change, ulong node);

        [LoggerMessage(Level = LogLevel.Information, Message = "Membership change at index {Index} applied: node {Node} is now at {Address}")]
        public static partial void MemberMoved(ILogger logger, ulong index, ulong node, string? address);

        [LoggerMessage(Level = LogLevel.Information, Message = "Snapshot taken at index {Index} (term {Term}), {Keys} keys, in {Elapsed}")]
        public static partial void SnapshotTaken(ILogger logger, ulong index, ulong term, int keys, TimeSpan elapsed);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Snapshot at index {Index} was not taken: {Reason}")]
        public static partial void SnapshotFailed(ILogger logger, ulong index, string reason);

        [LoggerMessage(Level = LogLevel.Information, Message = "Snapshot at index {Index} skipped: a snapshot from the leader is being received; none is begun until it is in")]
        public static partial void SnapshotSkippedWhileReceiving(ILogger logger, ulong index);

        [LoggerMessage(Level = LogLevel.Information, Message = "Installed snapshot {Index} (term {Term}) from the leader: {Keys} keys")]
        public static partial void SnapshotInstalled(ILogger logger, ulong index, ulong term, int keys);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Snapshot {Index} for node {Peer} is no longer stored")]
        public static partial void SnapshotMissing(ILogger logger, ulong index, ulong peer);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Node {NodeId} was removed from the cluster ({Membership}); the members refuse its traffic from now on. Stop it and delete its data directory; to bring the machine back, add it as a new member with a new id and an empty data directory")]
        public static partial void RemovedFromCluster(ILogger logger, ulong nodeId, string membership);

        [LoggerMessage(Level = LogLevel.Information, Message = "Snapshot at index {Index} abandoned: the node is stopping (the next start loads the previous snapshot and replays the log after it)")]
        public static partial void SnapshotAbandonedOnStop(ILogger logger, ulong index);

        [LoggerMessage(Level = LogLevel.Information, Message = "Loading snapshot {Index} from the leader abandoned: the node is stopping (the next start loads it from the snapshot store)")]
        public static partial void SnapshotBuildAbandonedOnStop(ILogger logger, ulong index);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Snapshot work was still in progress {Bound} after the node began to stop; storage closes under it and the snapshot is not kept")]
        public static partial void SnapshotWorkOutlivedStop(ILogger logger, TimeSpan bound);

        [LoggerMessage(Level = LogLevel.Critical, Message = "The Raft driver loop failed; the node stops")]
        public static partial void LoopFailed(ILogger logger, Exception exception);
    }
}
