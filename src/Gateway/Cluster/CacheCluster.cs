using Dcache.Protocol;
using Dcache.Protocol.Cache;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;
using Polly.Timeout;

namespace Dcache.Gateway.Cluster;

/// <summary>
/// Routes commands to the cluster: writes to the leader (learned from NotLeader hints, successful writes and a
/// periodic status poll), reads spread over every healthy node (or to the leader, with <see cref="ReadRouting.Leader"/>).
/// Commands handed over together (a pipeline wave) run as one batch in one Polly pipeline: a total deadline, retries
/// (at once at a hinted leader; with exponential backoff and jitter otherwise), a per-attempt timeout, and a circuit
/// breaker per node. Writes carry their session, so retrying one after a lost reply applies it at most once; only when
/// every attempt failed and one may have reached a node is the outcome unknown. While the leader's breaker is open
/// (this gateway cannot reach it, though its peers may), writes go to another member, which forwards them to the
/// leader; a write answered that way does not make that member the leader here.
/// The configured nodes are where it starts: members added at runtime are learned from the leader's status (and
/// from leader hints, which carry addresses), and nodes the leader no longer lists get no more commands; those not
/// configured are let go (connection closed, no more polls) once unlisted for <see cref="ClusterOptions.RemovedNodeGraceMilliseconds"/>.
/// </summary>
public sealed partial class CacheCluster : ICacheCluster, IAsyncDisposable
{
    /// <summary>The cluster client's meter: retries by reason (NotLeader redirects included), commands each node holds.</summary>
    public const string MeterName = "Dcache.Gateway.Cluster";

    private static readonly string[] RetryReasons = ["not_leader", "unavailable", "timeout", "unreachable", "breaker_open", "session_expired", "backlog_full"];

    // Counted here and observed by the meter, so every reason is exported from the start (at 0), not only once it happened.
    private readonly long[] _retryCounts = new long[RetryReasons.Length];
    private readonly System.Diagnostics.Metrics.Meter _meter = new(MeterName);

    private readonly ClusterOptions _options;
    private readonly ILogger<CacheCluster> _logger;
    private readonly Metadata _headers;
    private readonly Lock _nodesChanging = new();
    // Copy-on-write: readers take the current array; a discovered member is added, and a removed one let go, under _nodesChanging.
    private volatile NodeConnection[] _nodes;
    private readonly ResiliencePipeline<AttemptResult> _pipeline;
    private readonly CommandIds _ids = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _poller;
    private NodeConnection? _leaderField;
    private readonly int _maxItemBytes;
    private long _nextRead;
    private int _disposed;

    private NodeConnection? _leader
    {
        get => Volatile.Read(ref _leaderField);
        set => Volatile.Write(ref _leaderField, value);
    }

    public CacheCluster(IOptions<ClusterOptions> options, ILogger<CacheCluster> logger)
    {
        _options = options.Value;
        _logger = logger;
        _maxItemBytes = MessageLimits.MaxItemBytes(_options.MaxMessageBytes);
        _headers = new Metadata { { "dcache-cluster-id", _options.ClusterId }, { "dcache-secret", _options.ClusterSecret } };
        _nodes = _options.NodeAddresses().Select(address => new NodeConnection(address, isSeed: true, _headers, _options, _ids, logger)).ToArray();
        if (_nodes.Length == 0)
        {
            throw new InvalidOperationException($"{ClusterOptions.Section}:Nodes lists no node");
        }

        var deadline = TimeSpan.FromMilliseconds(_options.DeadlineMilliseconds);
        _pipeline = new ResiliencePipelineBuilder<AttemptResult>()
            .AddTimeout(new TimeoutStrategyOptions
            {
                Timeout = deadline,
                // A batch whose deadline began earlier (a session's registration before its first write) gets what is left.
                TimeoutGenerator = args => ValueTask.FromResult(args.Context.Properties.TryGetValue(BatchTimeLeft, out var left) ? left : deadline),
            })
            .AddRetry(new RetryStrategyOptions<AttemptResult>
            {
                ShouldHandle = args => ValueTask.FromResult(ShouldRetry(args.Outcome)),
                MaxRetryAttempts = 10_000, // bounded by the deadline above, not by a count
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromMilliseconds(20),
                MaxDelay = TimeSpan.FromMilliseconds(500),
                // A NotLeader reply that names the leader is retried there at once, as is a write given a new session.
                DelayGenerator = args => ValueTask.FromResult<TimeSpan?>(
                    args.Outcome.Exception is null && args.Outcome.Result is AttemptResult.NotLeaderNamed or AttemptResult.SessionExpired ? TimeSpan.Zero : null),
                OnRetry = args =>
                {
                    Interlocked.Increment(ref _retryCounts[RetryReason(args.Outcome)]);
                    return ValueTask.CompletedTask;
                },
            })
            // The per-attempt timeout is each node's (NodeConnection.Breaker), inside its circuit breaker: so a node that
            // leaves attempts unanswered opens its breaker, as one whose stream breaks does.
            .Build();
        _meter.CreateObservableCounter(
            "dcache.gateway.retries",
            () => RetryReasons.Select((reason, i) => new System.Diagnostics.Metrics.Measurement<long>(Interlocked.Read(ref _retryCounts[i]), new KeyValuePair<string, object?>("reason", reason))),
            "{attempt}",
            "Attempts at a batch of commands retried, by reason: not_leader (a redirect), unavailable, timeout, unreachable, breaker_open, session_expired, backlog_full");
        _meter.CreateObservableGauge(
            "dcache.gateway.node.commands",
            ObserveNodeCommands,
            "{command}",
            "Commands each node holds at this gateway, by state: queued (for its streams, not yet written) and sent (awaiting a reply)");
        _meter.CreateObservableGauge(
            "dcache.gateway.leader",
            () => (long)View.LeaderId,
            "{node}",
            "The node this gateway takes for the leader and sends writes to (0: none known)");
        _meter.CreateObservableGauge(
            "dcache.gateway.members",
            ObserveMembers,
            "{node}",
            "Cluster members this gateway knows, by health: healthy (its circuit breaker lets commands through) or unhealthy");
        _poller = Task.Run(PollStatusAsync);
    }

    private IEnumerable<System.Diagnostics.Metrics.Measurement<long>> ObserveMembers()
    {
        var view = View;
        yield return new(view.HealthyNodes, new KeyValuePair<string, object?>("health", "healthy"));
        yield return new(view.Nodes - view.HealthyNodes, new KeyValuePair<string, object?>("health", "unhealthy"));
    }

    public ClusterView View
    {
        get
        {
            var leader = _leader;
            var nodes = _nodes;
            // Removed members stay known for a grace period (they may be added back at the same address) but are not the cluster's.
            return new ClusterView(leader?.NodeId ?? 0, leader?.Address, nodes.Count(n => n.IsMember), nodes.Count(n => n.IsMember && n.Healthy));
        }
    }

    public Task<Reply> ExecuteAsync(Command command, ReadMode mode, CancellationToken cancellationToken)
    {
        var call = new ClusterCall(command, mode);
        ExecuteAll([call], cancellationToken);
        return call.Reply;
    }

    public void ExecuteAll(IReadOnlyList<ClusterCall> calls, CancellationToken cancellationToken)
    {
        if (calls.Count > 0 && new Batch(this, calls) is { Unanswered: > 0 } batch)
        {
            _ = RunAsync(batch, cancellationToken);
        }
    }

    private async Task RunAsync(Batch batch, CancellationToken cancellationToken)
    {
        try
        {
            if (batch.TimeLeft is { } left)
            {
                await RunWithTimeLeftAsync(batch, left, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await _pipeline.ExecuteAsync(static (state, token) => state.AttemptAsync(token), batch, cancellationToken).ConfigureAwait(false);
            }

            batch.GiveUp(null);
        }
        catch (Exception ex) when (ex is TimeoutRejectedException or NodeUnreachableException or NodeBacklogFullException or BrokenCircuitException or RpcException or CredentialsRefusedException)
        {
            batch.GiveUp(ex);
        }
        catch (Exception ex)
        {
            // The client went away (a cancellation), or a bug: either way every call still gets its ending.
            batch.Fail(ex);
        }
    }

    private static readonly ResiliencePropertyKey<TimeSpan> BatchTimeLeft = new("dcache.batch-time-left");

    private async Task RunWithTimeLeftAsync(Batch batch, TimeSpan left, CancellationToken cancellationToken)
    {
        if (left < TimeSpan.FromMilliseconds(1))
        {
            return; // nothing was sent: GiveUp answers "not applied"
        }

        var context = ResilienceContextPool.Shared.Get(cancellationToken);
        try
        {
            context.Properties.Set(BatchTimeLeft, left);
            await _pipeline.ExecuteAsync(static (context, state) => state.AttemptAsync(context.CancellationToken), context, batch).ConfigureAwait(false);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    private static Reply Unknown(int attempts, string detail) =>
        Failure(FailureKind.OutcomeUnknown, $"the write was sent {attempts} time(s) and may or may not have been applied: {detail}");

    private static Reply Failure(FailureKind kind, string message) => new() { Failure = new Failure { Kind = kind, Message = message } };

    private static bool ShouldRetry(Outcome<AttemptResult> outcome) => outcome.Exception switch
    {
        null => outcome.Result != AttemptResult.Done,
        var exception => exception is NodeUnreachableException or NodeBacklogFullException or TimeoutRejectedException or BrokenCircuitException or RpcException,
    };

    /// <summary>The index in <see cref="RetryReasons"/>.</summary>
    private static int RetryReason(Outcome<AttemptResult> outcome) => outcome.Exception switch
    {
        TimeoutRejectedException => (int)AttemptResult.Timeout,
        BrokenCircuitException => (int)AttemptResult.BreakerOpen,
        NodeBacklogFullException => (int)AttemptResult.BacklogFull,
        not null => (int)AttemptResult.Unreachable,
        null when outcome.Result == AttemptResult.NotLeaderNamed => (int)AttemptResult.NotLeader,
        null => (int)outcome.Result,
    };

    /// <summary>
    /// How an attempt at a batch ended: all answered, or why some commands are to be tried again. The first seven are
    /// the indexes of <see cref="RetryReasons"/>.
    /// </summary>
    private enum AttemptResult
    {
        NotLeader,
        Unavailable,
        Timeout,
        Unreachable,
        BreakerOpen,

        /// <summary>A write's session had expired on the cluster, and it surely never applied: resent at once under a new one.</summary>
        SessionExpired,

        /// <summary>The node already held <see cref="ClusterOptions.MaxCommandsPerNode"/> commands: not sent.</summary>
        BacklogFull,

        /// <summary>A node named the leader: try there at once.</summary>
        NotLeaderNamed,
        Done,
    }

    /// <summary>
    /// The commands of one batch and their attempts. Each attempt sends every command still unanswered, grouped by the
    /// node it goes to; a command is answered (and its call completed) as soon as a node gives a final reply. What is
    /// left when the deadline passes is reported as not applied, or, for a write one attempt may have delivered, as an
    /// unknown outcome.
    /// </summary>
    private sealed class Batch
    {
        private readonly CacheCluster _cluster;
        private readonly ClusterCall[] _calls;
        private readonly bool[] _isWrite;
        private readonly int[] _attempts;
        private readonly bool[] _maybeApplied;
        private readonly bool[] _answered;
        // When the batch's deadline began: now, or earlier for a call that continues an earlier one's (ClusterCall.DeadlineStartedAt).
        private readonly long _startedAt;
        private int _unanswered;
        private NodeConnection? _hinted;
        // Where an attempt last timed out, lost its stream or found the backlog full: reads, which any member can serve,
        // go elsewhere next time.
        // A black-holed node is found out only by timeouts, and its breaker opens only after several, so without this
        // every retry of a read routed to the leader went back to it until then.
        private NodeConnection? _unresponsive;

        public Batch(CacheCluster cluster, IReadOnlyList<ClusterCall> calls)
        {
            _cluster = cluster;
            _calls = [.. calls];
            _unanswered = _calls.Length;
            _isWrite = new bool[_calls.Length];
            _attempts = new int[_calls.Length];
            _maybeApplied = new bool[_calls.Length];
            _answered = new bool[_calls.Length];
            _startedAt = System.Diagnostics.Stopwatch.GetTimestamp();
            for (var i = 0; i < _calls.Length; i++)
            {
                var call = _calls[i];
                if (call.DeadlineStartedAt is > 0 and var began && began < _startedAt)
                {
                    _startedAt = began;
                    TimeLeft = TimeSpan.FromMilliseconds(cluster._options.DeadlineMilliseconds) - System.Diagnostics.Stopwatch.GetElapsedTime(began);
                }

                _isWrite[i] = call.Command.IsWrite;
                if (!_isWrite[i])
                {
                    call.Command.Consistency = call.Mode == ReadMode.Local ? ReadConsistency.Local : ReadConsistency.Linearizable;
                }

                // Refused before any node is chosen: a refusal coming back from a node a write was sent to would be taken
                // for that node's answer, and so for a sign that it leads.
                if (NodeConnection.TooLargeRefusal(NodeConnection.SizeOnAnyAttempt(call.Command), cluster._maxItemBytes) is { } refusal)
                {
                    Answer(i, refusal);
                }
            }
        }

        /// <summary>Calls still waiting for their ending.</summary>
        public int Unanswered => _unanswered;

        /// <summary>What is left of the deadline when it began before the batch (null: the whole deadline).</summary>
        public TimeSpan? TimeLeft { get; }

        public async ValueTask<AttemptResult> AttemptAsync(CancellationToken token)
        {
            if (_cluster.CredentialsRefusedByEveryNode() is { } refusal)
            {
                throw new CredentialsRefusedException($"every node refuses this gateway's credentials ({refusal}); {ClusterOptions.Section}:ClusterId and ClusterSecret must be the nodes'");
            }

            // A node that names the leader is believed even while that leader's breaker is open: otherwise the
            // followers would keep pointing at it, at once, in a tight loop. An open breaker fails fast, and the
            // retry then backs off.
            var hinted = _hinted;
            _hinted = null;
            // How long this attempt waits for its reads, told to the nodes: one drops a read still unanswered then (a
            // long read's remaining slices) rather than work on for nobody.
            var options = _cluster._options;
            var untilDeadline = options.DeadlineMilliseconds - (long)System.Diagnostics.Stopwatch.GetElapsedTime(_startedAt).TotalMilliseconds;
            var readTimeoutMs = (uint)Math.Clamp(Math.Min(options.AttemptTimeoutMilliseconds, untilDeadline), 1, uint.MaxValue);
            NodeConnection? writeNode = null;
            var forwardWrites = false;
            NodeConnection? readNode = null;
            var groups = new List<Group>(2);
            for (var i = 0; i < _calls.Length; i++)
            {
                if (_answered[i])
                {
                    continue;
                }

                NodeConnection node;
                if (hinted is not null)
                {
                    node = hinted;
                }
                else if (_isWrite[i])
                {
                    if (writeNode is null)
                    {
                        (writeNode, forwardWrites) = _cluster.ChooseForWrite();
                    }

                    node = writeNode;
                }
                else
                {
                    node = readNode ??= _cluster.Choose(isWrite: false, avoid: _unresponsive);
                }

                if (_isWrite[i])
                {
                    // Set again on every attempt: once the leader is ready again, its writes go straight to it.
                    _calls[i].Command.ForwardToLeader = hinted is null && forwardWrites;
                }
                var group = GroupFor(groups, node);
                if (group is null)
                {
                    // Sized for every command still unanswered: most batches go to one node.
                    group = new Group(node, _unanswered);
                    groups.Add(group);
                }

                if (_maybeApplied[i])
                {
                    // Registered sessions' writes are marked already; this covers a write moved to a new session
                    // (below, in Take), whose first attempt may have started that session: should it expire before
                    // this retry arrives, an unmarked retry would start it again and apply the write twice.
                    _calls[i].Command.SessionMustExist = true;
                }

                if (!_isWrite[i])
                {
                    _calls[i].Command.TimeoutMs = readTimeoutMs;
                }

                group.Indexes.Add(i);
                group.Commands.Add(_calls[i].Command);
                _attempts[i]++;
            }

            foreach (var group in groups)
            {
                group.Replies = new Reply?[group.Commands.Count];
                group.Sent = group.Node.AttemptAsync(group.Commands, group.Replies, token);
            }

            var result = AttemptResult.Done;
            Exception? failure = null;
            foreach (var group in groups)
            {
                try
                {
                    await group.Sent!.ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    failure ??= ex;
                    result = Worse(result, Failed(group, ex));
                }

                for (var k = 0; k < group.Indexes.Count; k++)
                {
                    if (Volatile.Read(ref group.Replies![k]) is { } reply)
                    {
                        result = Worse(result, Take(group.Indexes[k], group.Node, reply));
                    }
                }
            }

            if (failure is OperationCanceledException && token.IsCancellationRequested)
            {
                // The attempt's time ran out (the timeout strategy makes this a retry) or the client went away.
                throw new OperationCanceledException(failure.Message, failure, token);
            }

            return _unanswered == 0 ? AttemptResult.Done : result;
        }

        // A loop, not List.Find with a lambda: the lambda would capture the node, a closure and a delegate per command.
        private static Group? GroupFor(List<Group> groups, NodeConnection node)
        {
            foreach (var group in groups)
            {
                if (ReferenceEquals(group.Node, node))
                {
                    return group;
                }
            }

            return null;
        }

        /// <summary>Takes one reply in: completes its call, or keeps it for the next attempt and says why.</summary>
        private AttemptResult Take(int index, NodeConnection node, Reply reply)
        {
            // A write a follower forwarded was applied by the leader, not by that follower.
            _cluster.Learn(node, reply, answeredWrite: _isWrite[index] && !_calls[index].Command.ForwardToLeader);
            if (reply.Failure is { Kind: FailureKind.NotLeader } notLeader)
            {
                // Retried at once only when the hint leads somewhere: a leader named without an address (the node knows
                // no address for it) would send the retry straight back to the same node, again and again.
                var hinted = _cluster.FindOrAdd(notLeader.LeaderAddress);
                _hinted ??= hinted;
                return notLeader.LeaderId != 0 && hinted is not null ? AttemptResult.NotLeaderNamed : AttemptResult.NotLeader;
            }

            if (_isWrite[index] && reply.Failure is { Kind: FailureKind.SessionExpired })
            {
                if (_maybeApplied[index])
                {
                    // An earlier attempt may have applied under the session the cluster has now forgotten: a new
                    // session could apply the write a second time.
                    Answer(index, Unknown(_attempts[index], "its session expired on the cluster before the retry arrived"));
                    return AttemptResult.Done;
                }

                // Every attempt so far surely failed to apply: the same write under a fresh session applies it once.
                var command = _calls[index].Command;
                command.ClientId = WriteSessionIds.Next();
                command.Sequence = 1;
                command.SessionMustExist = false; // this write starts the new session
                return AttemptResult.SessionExpired;
            }

            if (_isWrite[index] && reply.Failure is { Kind: FailureKind.OutcomeUnknown })
            {
                _maybeApplied[index] = true;
                if (_calls[index].Command.ClientId != 0)
                {
                    return AttemptResult.Unavailable; // the session makes a retry apply at most once: ask again rather than give up
                }
            }
            else if (reply.Failure is { Kind: FailureKind.Unavailable })
            {
                return AttemptResult.Unavailable;
            }

            Answer(index, reply.Failure is { Kind: not FailureKind.OutcomeUnknown } && _maybeApplied[index]
                ? Unknown(_attempts[index], reply.Failure.Message)
                : reply);
            return AttemptResult.Done;
        }

        /// <summary>A group's send failed: its writes may have been delivered unless it surely never left.</summary>
        private AttemptResult Failed(Group group, Exception ex)
        {
            var (maybeDelivered, result) = ex switch
            {
                NodeUnreachableException unreachable => (unreachable.MaybeDelivered, AttemptResult.Unreachable),
                BrokenCircuitException => (false, AttemptResult.BreakerOpen),
                NodeBacklogFullException => (false, AttemptResult.BacklogFull),
                _ => (true, AttemptResult.Timeout),
            };
            if (ex is NodeUnreachableException)
            {
                _cluster.Forget(group.Node);
            }

            if (result is AttemptResult.Timeout or AttemptResult.Unreachable or AttemptResult.BacklogFull)
            {
                _unresponsive = group.Node;
            }

            if (maybeDelivered)
            {
                foreach (var index in group.Indexes)
                {
                    _maybeApplied[index] |= _isWrite[index];
                }
            }

            return result;
        }

        private void Answer(int index, Reply reply)
        {
            _answered[index] = true;
            _unanswered--;
            _calls[index].Complete(reply);
        }

        /// <summary>The deadline passed (or nothing was left to try): every unanswered call gets its ending.</summary>
        public void GiveUp(Exception? error)
        {
            var detail = error?.Message ?? "no attempt left";
            for (var i = 0; i < _calls.Length; i++)
            {
                if (!_answered[i])
                {
                    Answer(i, (_maybeApplied[i], error) switch
                    {
                        (true, CredentialsRefusedException) => Unknown(_attempts[i], detail),
                        (true, _) => Unknown(_attempts[i], $"no reply within the deadline ({detail})"),
                        (false, CredentialsRefusedException) => Failure(FailureKind.Unavailable, $"not applied: {detail}"),
                        _ => Failure(FailureKind.Unavailable, $"not applied: the cluster did not answer in time ({detail})"),
                    });
                }
            }
        }

        public void Fail(Exception error)
        {
            for (var i = 0; i < _calls.Length; i++)
            {
                if (!_answered[i])
                {
                    _answered[i] = true;
                    _calls[i].Fail(error);
                }
            }
        }

        // The smaller value is the more telling reason (and never Done while a command is left).
        private static AttemptResult Worse(AttemptResult a, AttemptResult b) => a < b ? a : b;

        private sealed class Group(NodeConnection node, int capacity)
        {
            public NodeConnection Node { get; } = node;

            public List<int> Indexes { get; } = new(capacity);

            public List<Command> Commands { get; } = new(capacity);

            public Reply?[]? Replies;

            public Task? Sent;
        }
    }

    /// <summary>A node's reason when every node refuses this gateway's credentials; null while any accepts them or has not said.</summary>
    private string? CredentialsRefusedByEveryNode()
    {
        string? reason = null;
        foreach (var node in _nodes)
        {
            if (node.CredentialsRefused is not { } refused)
            {
                return null;
            }

            reason ??= refused;
        }

        return reason;
    }

    /// <summary>
    /// The node for a write, and whether that node is to forward it to the leader: when the leader this gateway knows is
    /// not ready for an attempt (its breaker is open: this gateway cannot reach it, though its peers may) and the write
    /// goes to another member instead, which then forwards it (<c>Command.forward_to_leader</c>).
    /// </summary>
    private (NodeConnection Node, bool Forward) ChooseForWrite()
    {
        var leader = _leader;
        var node = Choose(isWrite: true);
        return (node, leader is { ReadyForAttempt: false } && !ReferenceEquals(node, leader));
    }

    /// <summary>
    /// The node for a write (the leader) or a read (the leader, or round the members); a read avoids
    /// <paramref name="avoid"/> while another healthy member is there to ask.
    /// </summary>
    private NodeConnection Choose(bool isWrite, NodeConnection? avoid = null)
    {
        if ((isWrite || _options.ReadRouting == ReadRouting.Leader) && _leader is { ReadyForAttempt: true } leader
            && (isWrite || !ReferenceEquals(leader, avoid)))
        {
            return leader;
        }

        // Reads routed to members (and anything while no leader is known) go round the healthy members, and to a member
        // whose breaker is due for a probe.
        var nodes = _nodes;
        var start = (int)((ulong)Interlocked.Increment(ref _nextRead) % (ulong)nodes.Length);
        NodeConnection? avoided = null;
        NodeConnection? waitingMember = null;
        for (var i = 0; i < nodes.Length; i++)
        {
            var node = nodes[(start + i) % nodes.Length];
            if (!node.IsMember)
            {
                continue;
            }

            if (!node.ReadyForAttempt)
            {
                waitingMember ??= node;
                continue;
            }

            if (!isWrite && ReferenceEquals(node, avoid))
            {
                avoided = node;
                continue;
            }

            return node;
        }

        // With no member ready, the attempt goes to a member all the same (its breaker fails it at once, and the retry
        // backs off): a node the leader no longer lists, though it may still answer, no longer holds the cluster's
        // state. Only while no node at all is listed (never so once a leader was heard from) is any node taken.
        return avoided ?? waitingMember ?? nodes[start];
    }

    private IEnumerable<System.Diagnostics.Metrics.Measurement<int>> ObserveNodeCommands()
    {
        foreach (var node in _nodes)
        {
            var address = new KeyValuePair<string, object?>("node", node.Address);
            yield return new(node.CommandsQueued, address, new KeyValuePair<string, object?>("state", "queued"));
            yield return new(node.CommandsSent, address, new KeyValuePair<string, object?>("state", "sent"));
        }
    }

    /// <summary>The connections to every node known (for tests: what each holds).</summary>
    internal IReadOnlyList<NodeConnection> Nodes => _nodes;

    private NodeConnection? Find(string address) =>
        string.IsNullOrEmpty(address) ? null : Array.Find(_nodes, n => string.Equals(n.Address, address.TrimEnd('/'), StringComparison.OrdinalIgnoreCase));

    /// <summary>The connection to <paramref name="address"/>, opened now if it is a member this gateway was not configured with.</summary>
    private NodeConnection? FindOrAdd(string address)
    {
        if (string.IsNullOrEmpty(address))
        {
            return null;
        }

        if (Find(address) is { } known)
        {
            return known;
        }

        lock (_nodesChanging)
        {
            if (Find(address) is { } raced)
            {
                return raced;
            }

            var added = new NodeConnection(address.TrimEnd('/'), isSeed: false, _headers, _options, _ids, _logger);
            _nodes = [.. _nodes, added];
            Log.NodeDiscovered(_logger, added.Address);
            return added;
        }
    }

    /// <summary>Takes the leader's membership in: its members are reachable; other known nodes get no more commands.</summary>
    private void LearnMembers(NodeStatus leaderStatus)
    {
        var addresses = leaderStatus.Members.Where(m => m.Address.Length > 0).Select(m => m.Address.TrimEnd('/')).ToHashSet(StringComparer.OrdinalIgnoreCase);
        if (addresses.Count == 0)
        {
            return;
        }

        foreach (var address in addresses)
        {
            FindOrAdd(address);
        }

        foreach (var node in _nodes)
        {
            node.SetListed(addresses.Contains(node.Address));
        }
    }

    /// <summary>
    /// Lets go of the nodes left out of the membership for longer than the grace period (seeds excepted): they leave the
    /// node list (so the polls and the per-node gauges), and their connections close, which fails the commands still in
    /// flight on them over to other nodes as a broken stream would.
    /// </summary>
    private async Task DropRemovedNodesAsync()
    {
        var grace = TimeSpan.FromMilliseconds(_options.RemovedNodeGraceMilliseconds);
        if (!Array.Exists(_nodes, node => node.RemovedFor(grace)))
        {
            return;
        }

        NodeConnection[] dropped;
        lock (_nodesChanging)
        {
            dropped = Array.FindAll(_nodes, node => node.RemovedFor(grace));
            _nodes = Array.FindAll(_nodes, node => !dropped.Contains(node));
        }

        foreach (var node in dropped)
        {
            Forget(node);
            Log.NodeDropped(_logger, node.Address, _options.RemovedNodeGraceMilliseconds / 1000.0);
            try
            {
                await node.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                // The poller runs this: whatever closing one connection throws must not end the status polls.
                Log.DropFailed(_logger, node.Address, ex);
            }
        }
    }

    /// <summary>
    /// Takes in what a reply says about the leader: a NotLeader hint names it, and a write <paramref name="node"/> itself
    /// answered (<paramref name="answeredWrite"/>: not one it forwarded) shows that it leads.
    /// </summary>
    private void Learn(NodeConnection node, Reply reply, bool answeredWrite)
    {
        if (reply.Failure is { Kind: FailureKind.NotLeader } failure)
        {
            var leader = FindOrAdd(failure.LeaderAddress);
            if (leader is not null)
            {
                if (failure.LeaderId != 0)
                {
                    leader.NodeId = failure.LeaderId;
                }

                SetLeader(leader);
            }
        }
        else if (answeredWrite && reply.ResultCase != Reply.ResultOneofCase.Failure)
        {
            SetLeader(node); // only a leader applies writes
        }
    }

    /// <summary>An unreachable node is no longer taken for the leader; the next write goes round the others.</summary>
    private void Forget(NodeConnection node) => Interlocked.CompareExchange(ref _leaderField, null, node);

    private void SetLeader(NodeConnection leader)
    {
        if (!ReferenceEquals(_leader, leader))
        {
            _leader = leader;
            Log.LeaderChanged(_logger, leader.Address, leader.NodeId);
        }
    }

    private async Task PollStatusAsync()
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(_options.StatusPollMilliseconds));
        var token = _stopping.Token;
        do
        {
            // All nodes at once, each reply taken in as it comes: a dead node must not delay learning the leader from the others.
            var round = new PollRound(_pollTermFloor);
            await Task.WhenAll(_nodes.Select(node => PollAsync(node, round, token))).ConfigureAwait(false);
            _pollTermFloor = round.Finish(this) ?? _pollTermFloor;
            await DropRemovedNodesAsync().ConfigureAwait(false);

            try
            {
                if (!await timer.WaitForNextTickAsync(token).ConfigureAwait(false))
                {
                    return;
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
        while (!token.IsCancellationRequested);
    }

    // The newest term the previous poll round heard a leader claimed in (0 before the first).
    private ulong _pollTermFloor;

    /// <summary>
    /// One round of status polls. It follows the leader of the newest term it hears of (a node that leads, or one that
    /// names its leader with an address), not whichever node answers last: a node that can no longer hear of a newer
    /// leader (removed but still running, a learner cut off from the voters) keeps naming an old one, and took the
    /// gateway back to it in every round. A claim at least as new as the previous round's newest is followed as soon as
    /// it arrives; an older one only at the end of the round, if nothing newer came (a cluster founded again at the same
    /// addresses starts its terms over).
    /// </summary>
    private sealed class PollRound(ulong floor)
    {
        private readonly Lock _gate = new();
        private (NodeConnection Node, NodeStatus Status, NodeConnection Leader)? _best;
        private bool _bestFollowed;

        public void Heard(CacheCluster cluster, NodeConnection node, NodeStatus status)
        {
            NodeConnection? leader = status.Role == "Leader" ? node
                : status.LeaderId != 0 ? cluster.FindOrAdd(status.LeaderAddress)
                : null;
            if (leader is null)
            {
                return;
            }

            lock (_gate)
            {
                // A node's own word that it leads beats another's naming a leader in the same term.
                if (_best is { } best && (status.Term < best.Status.Term
                    || (status.Term == best.Status.Term && (status.Role != "Leader" || best.Status.Role == "Leader"))))
                {
                    return;
                }

                _best = (node, status, leader);
                _bestFollowed = status.Term >= floor;
                if (_bestFollowed)
                {
                    Follow(cluster, _best.Value);
                }
            }
        }

        /// <summary>Follows the round's newest claim if it was held back; returns its term (null: no claim heard).</summary>
        public ulong? Finish(CacheCluster cluster)
        {
            lock (_gate)
            {
                if (_best is not { } best)
                {
                    return null;
                }

                if (!_bestFollowed)
                {
                    Follow(cluster, best);
                }

                return best.Status.Term;
            }
        }

        private static void Follow(CacheCluster cluster, (NodeConnection Node, NodeStatus Status, NodeConnection Leader) claim)
        {
            if (claim.Status.Role == "Leader")
            {
                cluster.SetLeader(claim.Node);
                cluster.LearnMembers(claim.Status);
            }
            else
            {
                claim.Leader.NodeId = claim.Status.LeaderId;
                cluster.SetLeader(claim.Leader);
            }
        }
    }

    private async Task PollAsync(NodeConnection node, PollRound round, CancellationToken token)
    {
        try
        {
            var status = await node.Client.StatusAsync(new StatusRequest(), node.Headers, DateTime.UtcNow.AddSeconds(1), token).ConfigureAwait(false);
            node.NoteAnswered();
            node.NodeId = status.NodeId;
            round.Heard(this, node, status);
        }
        catch (RpcException ex)
        {
            // A poll cut short by shutdown surfaces as a Cancelled RpcException: not a failure worth reporting.
            if (!token.IsCancellationRequested && !node.NoteIfCredentialsRefused(ex))
            {
                Log.StatusFailed(_logger, node.Address, ex.Status.StatusCode);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return; // registered both as itself and as ICacheCluster: the container disposes it twice
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            await _poller.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        foreach (var node in _nodes)
        {
            await node.DisposeAsync().ConfigureAwait(false);
        }

        _meter.Dispose();
        _stopping.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "Leader is now {Address} (node {NodeId})")]
        public static partial void LeaderChanged(ILogger logger, string address, ulong nodeId);

        [LoggerMessage(Level = LogLevel.Information, Message = "Discovered cluster member at {Address}")]
        public static partial void NodeDiscovered(ILogger logger, string address);

        [LoggerMessage(Level = LogLevel.Information, Message = "Let go of {Address}: not in the leader's membership for {GraceSeconds} s")]
        public static partial void NodeDropped(ILogger logger, string address, double graceSeconds);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Closing the connection to {Address} (no longer a member) failed")]
        public static partial void DropFailed(ILogger logger, string address, Exception exception);

        [LoggerMessage(Level = LogLevel.Debug, Message = "Status poll of {Address} failed: {Code}")]
        public static partial void StatusFailed(ILogger logger, string address, StatusCode code);
    }
}
