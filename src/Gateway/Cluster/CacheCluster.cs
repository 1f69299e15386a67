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
/// Each command runs in a Polly pipeline: a total deadline, retries (at once at a hinted leader; with exponential
/// backoff and jitter otherwise), a per-attempt timeout, and a circuit breaker per node. Writes carry their session, so retrying one after a lost reply applies
/// it at most once; only when every attempt failed and one may have reached a node is the outcome unknown.
/// The configured nodes are where it starts: members added at runtime are learned from the leader's status (and
/// from leader hints, which carry addresses), and nodes the leader no longer lists get no more commands.
/// </summary>
public sealed partial class CacheCluster : ICacheCluster, IAsyncDisposable
{
    /// <summary>The cluster client's meter: retries by reason (NotLeader redirects included).</summary>
    public const string MeterName = "Dcache.Gateway.Cluster";

    private static readonly string[] RetryReasons = ["not_leader", "unavailable", "timeout", "unreachable", "breaker_open"];

    // Counted here and observed by the meter, so every reason is exported from the start (at 0), not only once it happened.
    private readonly long[] _retryCounts = new long[RetryReasons.Length];
    private readonly System.Diagnostics.Metrics.Meter _meter = new(MeterName);

    private readonly ClusterOptions _options;
    private readonly ILogger<CacheCluster> _logger;
    private readonly Metadata _headers;
    private readonly Lock _nodesChanging = new();
    // Copy-on-write: readers take the current array; a discovered member is added under _nodesChanging.
    private volatile NodeConnection[] _nodes;
    private readonly ResiliencePipeline<Reply> _pipeline;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _poller;
    private NodeConnection? _leaderField;
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
        _headers = new Metadata { { "dcache-cluster-id", _options.ClusterId }, { "dcache-secret", _options.ClusterSecret } };
        _nodes = _options.NodeAddresses().Select(address => new NodeConnection(address, _headers, _options, logger)).ToArray();
        if (_nodes.Length == 0)
        {
            throw new InvalidOperationException($"{ClusterOptions.Section}:Nodes lists no node");
        }

        _pipeline = new ResiliencePipelineBuilder<Reply>()
            .AddTimeout(TimeSpan.FromMilliseconds(_options.DeadlineMilliseconds))
            .AddRetry(new RetryStrategyOptions<Reply>
            {
                ShouldHandle = args => ValueTask.FromResult(ShouldRetry(args.Outcome)),
                MaxRetryAttempts = 10_000, // bounded by the deadline above, not by a count
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromMilliseconds(20),
                MaxDelay = TimeSpan.FromMilliseconds(500),
                // A NotLeader reply that names the leader is retried there at once.
                DelayGenerator = args => ValueTask.FromResult<TimeSpan?>(
                    args.Outcome.Result?.Failure is { Kind: FailureKind.NotLeader, LeaderId: not 0 } ? TimeSpan.Zero : null),
                OnRetry = args =>
                {
                    Interlocked.Increment(ref _retryCounts[Array.IndexOf(RetryReasons, RetryReason(args.Outcome))]);
                    return ValueTask.CompletedTask;
                },
            })
            .AddTimeout(TimeSpan.FromMilliseconds(_options.AttemptTimeoutMilliseconds))
            .Build();
        _meter.CreateObservableCounter(
            "dcache.gateway.retries",
            () => RetryReasons.Select((reason, i) => new System.Diagnostics.Metrics.Measurement<long>(Interlocked.Read(ref _retryCounts[i]), new KeyValuePair<string, object?>("reason", reason))),
            "{attempt}",
            "Attempts retried, by reason: not_leader (a redirect), unavailable, timeout, unreachable, breaker_open");
        _poller = Task.Run(PollStatusAsync);
    }

    public ClusterView View
    {
        get
        {
            var leader = _leader;
            var nodes = _nodes;
            return new ClusterView(leader?.NodeId ?? 0, leader?.Address, nodes.Length, nodes.Count(n => n.Healthy));
        }
    }

    public async Task<Reply> ExecuteAsync(Command command, ReadMode mode, CancellationToken cancellationToken)
    {
        var attempt = new Attempt(this, command, IsWrite(command));
        if (!attempt.IsWrite)
        {
            command.Consistency = mode == ReadMode.Local ? ReadConsistency.Local : ReadConsistency.Linearizable;
        }

        try
        {
            var reply = await _pipeline.ExecuteAsync(static (state, token) => new ValueTask<Reply>(state.RunAsync(token)), attempt, cancellationToken).ConfigureAwait(false);
            return reply.Failure is { Kind: FailureKind.OutcomeUnknown } || !attempt.MaybeApplied || reply.ResultCase != Reply.ResultOneofCase.Failure
                ? reply
                : Unknown(attempt, reply.Failure.Message);
        }
        catch (Exception ex) when (ex is TimeoutRejectedException or NodeUnreachableException or BrokenCircuitException or RpcException)
        {
            return attempt.MaybeApplied
                ? Unknown(attempt, $"no reply within the deadline ({ex.Message})")
                : Failure(FailureKind.Unavailable, $"not applied: the cluster did not answer in time ({ex.Message})");
        }
    }

    private static Reply Unknown(Attempt attempt, string detail) =>
        Failure(FailureKind.OutcomeUnknown, $"the write was sent {attempt.Attempts} time(s) and may or may not have been applied: {detail}");

    private static Reply Failure(FailureKind kind, string message) => new() { Failure = new Failure { Kind = kind, Message = message } };

    private static bool IsWrite(Command command) => command.OpCase is
        Command.OpOneofCase.Set or Command.OpOneofCase.Del or Command.OpOneofCase.Mset or Command.OpOneofCase.IncrBy
        or Command.OpOneofCase.Expire or Command.OpOneofCase.Persist;

    private static string RetryReason(Outcome<Reply> outcome) => outcome.Exception switch
    {
        BrokenCircuitException => "breaker_open",
        TimeoutRejectedException => "timeout",
        not null => "unreachable",
        null => outcome.Result?.Failure?.Kind == FailureKind.NotLeader ? "not_leader" : "unavailable",
    };

    private static bool ShouldRetry(Outcome<Reply> outcome)
    {
        if (outcome.Exception is not null)
        {
            return outcome.Exception is NodeUnreachableException or TimeoutRejectedException or BrokenCircuitException or RpcException;
        }

        return outcome.Result?.Failure?.Kind is FailureKind.NotLeader or FailureKind.Unavailable;
    }

    /// <summary>One command's attempts: where to send the next one, and whether any may have applied.</summary>
    private sealed class Attempt(CacheCluster cluster, Command command, bool isWrite)
    {
        public bool IsWrite { get; } = isWrite;

        public int Attempts { get; private set; }

        /// <summary>Some attempt of this write may have reached a node and applied there.</summary>
        public bool MaybeApplied { get; private set; }

        private NodeConnection? _hinted;

        public async Task<Reply> RunAsync(CancellationToken token)
        {
            var node = cluster.Choose(IsWrite, _hinted);
            _hinted = null;
            Attempts++;
            try
            {
                var reply = await node.Breaker.ExecuteAsync(static (state, t) => new ValueTask<Reply>(state.node.SendAsync(state.command, t)), (node, command), token).ConfigureAwait(false);
                cluster.Learn(node, reply, IsWrite);
                if (reply.Failure is { Kind: FailureKind.NotLeader } notLeader)
                {
                    _hinted = cluster.FindOrAdd(notLeader.LeaderAddress);
                }
                else if (IsWrite && reply.Failure is { Kind: FailureKind.OutcomeUnknown })
                {
                    MaybeApplied = true;
                    if (command.ClientId != 0)
                    {
                        // The session makes a retry apply at most once: ask again rather than give up.
                        return new Reply { Failure = new Failure { Kind = FailureKind.Unavailable, Message = reply.Failure.Message } };
                    }
                }

                return reply;
            }
            catch (NodeUnreachableException ex)
            {
                cluster.Forget(node);
                MaybeApplied |= IsWrite && ex.MaybeDelivered;
                throw;
            }
            catch (Exception ex) when (IsWrite && ex is TimeoutRejectedException or OperationCanceledException or RpcException)
            {
                MaybeApplied = true;
                throw;
            }
        }
    }

    private NodeConnection Choose(bool isWrite, NodeConnection? hinted)
    {
        // A node that names the leader is believed even while that leader's breaker is open: otherwise the
        // followers would keep pointing at it, at once, in a tight loop. An open breaker fails fast, and the
        // retry then backs off.
        if (hinted is not null)
        {
            return hinted;
        }

        if ((isWrite || _options.ReadRouting == ReadRouting.Leader) && _leader is { Healthy: true } leader)
        {
            return leader;
        }

        // Reads routed to members (and anything while no leader is known) go round the healthy members.
        var nodes = _nodes;
        var start = (int)((ulong)Interlocked.Increment(ref _nextRead) % (ulong)nodes.Length);
        for (var i = 0; i < nodes.Length; i++)
        {
            var node = nodes[(start + i) % nodes.Length];
            if (node.Healthy && node.IsMember)
            {
                return node;
            }
        }

        return nodes[start];
    }

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

            var added = new NodeConnection(address.TrimEnd('/'), _headers, _options, _logger);
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
            node.IsMember = addresses.Contains(node.Address);
        }
    }

    private void Learn(NodeConnection node, Reply reply, bool isWrite)
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
        else if (isWrite && reply.ResultCase != Reply.ResultOneofCase.Failure)
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
            // All nodes at once: a dead node must not delay learning the leader from the others.
            await Task.WhenAll(_nodes.Select(node => PollAsync(node, token))).ConfigureAwait(false);

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

    private async Task PollAsync(NodeConnection node, CancellationToken token)
    {
        try
        {
            var status = await node.Client.StatusAsync(new StatusRequest(), node.Headers, DateTime.UtcNow.AddSeconds(1), token).ConfigureAwait(false);
            node.NodeId = status.NodeId;
            if (status.Role == "Leader")
            {
                SetLeader(node);
                LearnMembers(status);
            }
            else if (status.LeaderId != 0 && FindOrAdd(status.LeaderAddress) is { } leader)
            {
                leader.NodeId = status.LeaderId;
                SetLeader(leader);
            }
        }
        catch (RpcException ex)
        {
            // A poll cut short by shutdown surfaces as a Cancelled RpcException: not a failure worth reporting.
            if (!token.IsCancellationRequested)
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

        [LoggerMessage(Level = LogLevel.Debug, Message = "Status poll of {Address} failed: {Code}")]
        public static partial void StatusFailed(ILogger logger, string address, StatusCode code);
    }
}
