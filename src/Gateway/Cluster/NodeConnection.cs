using System.Collections.Concurrent;
using System.Threading.Channels;
using Dcache.Protocol;
using Dcache.Protocol.Cache;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;
using Polly;
using Polly.CircuitBreaker;
using Polly.Timeout;

namespace Dcache.Gateway.Cluster;

/// <summary>Command ids, unique across the gateway's streams.</summary>
public sealed class CommandIds
{
    private long _last;

    public ulong Next() => (ulong)Interlocked.Increment(ref _last);
}

/// <summary>The call could not be carried out at that node (connection lost, stream reset, connection closed by the gateway).</summary>
public sealed class NodeUnreachableException(string message, bool maybeDelivered, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>True when the command may have reached the node before the failure (its effect is unknown).</summary>
    public bool MaybeDelivered { get; } = maybeDelivered;
}

/// <summary>
/// Not sent: the node already has <see cref="ClusterOptions.MaxCommandsPerNode"/> commands queued or unanswered (it
/// stalls, or cannot keep up). Certainly not applied; it says nothing more about the node, so it does not count against
/// its circuit breaker (the attempts that filled its backlog do, as they time out).
/// </summary>
public sealed class NodeBacklogFullException(string message) : Exception(message);

/// <summary>
/// Not sent: every node refuses this gateway's cluster id or secret. Retrying cannot help until the configuration of the
/// gateway or of the nodes changes, so the command is answered at once rather than at its deadline.
/// </summary>
public sealed class CredentialsRefusedException(string message) : Exception(message);

/// <summary>
/// One node, reached through a few long-lived bidirectional streams. Batches of commands from all client connections
/// are queued; each stream's writer sends whatever is queued as one batch message, and its reader completes commands
/// by id as replies arrive. A broken stream fails its in-flight batches and is reopened. Nothing is kept for an attempt
/// once its caller stopped waiting (timed out, or its client left): a node that never answers holds no more than
/// <see cref="ClusterOptions.MaxCommandsPerNode"/> commands here, and none once the attempts at it are over.
/// </summary>
public sealed partial class NodeConnection : IAsyncDisposable
{
    private readonly GrpcChannel _channel;
    private readonly Metadata _headers;
    private readonly ILogger _logger;
    private readonly int _maxBatch;
    private readonly int _maxBatchBytes;
    private readonly int _maxCommands;
    private readonly CommandIds _ids;
    private readonly CommandStream[] _streams;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CircuitBreakerStateProvider _breakerState = new();
    // When the open breaker lets a probe through (UTC ticks, by Polly's clock): Polly moves to half-open only when an
    // attempt is made, so the routing must know when to make one.
    private long _probeDueTicks;
    private long _nextStream;
    // Commands of attempts taken in for this node and not yet taken off a stream's queue by its writer (abandoned ones
    // included: the queue holds them until then), and commands written to a stream and not yet answered or abandoned.
    private int _queued;
    private int _sent;

    public NodeConnection(string address, bool isSeed, Metadata headers, ClusterOptions options, CommandIds ids, ILogger logger)
    {
        Address = address;
        IsSeed = isSeed;
        _headers = headers;
        _logger = logger;
        _maxBatch = options.MaxBatch;
        _maxBatchBytes = MessageLimits.MaxItemBytes(options.MaxMessageBytes);
        _maxCommands = options.MaxCommandsPerNode;
        _ids = ids;
        _channel = GrpcChannels.ForNode(address, options.MaxMessageBytes);
        Client = new Cache.CacheClient(_channel);
        _streams = Enumerable.Range(0, Math.Max(1, options.StreamsPerNode)).Select(_ => new CommandStream(this)).ToArray();
        var attemptTimeout = TimeSpan.FromMilliseconds(options.AttemptTimeoutMilliseconds);
        Breaker = new ResiliencePipelineBuilder()
            .AddCircuitBreaker(new CircuitBreakerStrategyOptions
            {
                // Transport failures count, and so do attempts this node left unanswered for the whole attempt timeout:
                // a node that is up at the TCP level but stalled (SIGSTOPped, hung, cut off behind a black hole) shows
                // nothing else, and every attempt sent to it would otherwise wait the timeout out. A node that answers
                // (even "not leader") is up. A caller that gives up earlier (its client left, or the batch's deadline
                // came first) says nothing about the node: that is a plain cancellation, not counted as a failure ...
                ShouldHandle = args => ValueTask.FromResult(args.Outcome.Exception switch
                {
                    NodeUnreachableException or RpcException or TimeoutRejectedException => true,
                    // ... except for the one probe a half-open breaker lets through: Polly counts anything unhandled as
                    // a success, and a probe nobody waited for would let a node that never answered back in.
                    OperationCanceledException => _breakerState.CircuitState == CircuitState.HalfOpen,
                    _ => false,
                }),
                FailureRatio = 0.5,
                MinimumThroughput = options.BreakAfterFailures,
                SamplingDuration = SamplingDuration(options),
                BreakDuration = TimeSpan.FromMilliseconds(options.BreakMilliseconds),
                StateProvider = _breakerState,
                OnOpened = args =>
                {
                    Volatile.Write(ref _probeDueTicks, (TimeProvider.System.GetUtcNow() + args.BreakDuration).UtcTicks);
                    return ValueTask.CompletedTask;
                },
            })
            // Inside the breaker, so that the breaker sees the timeout (as TimeoutRejectedException) and tells it from the
            // caller's cancellation.
            .AddTimeout(attemptTimeout)
            .Build();
    }

    /// <summary>
    /// The node's reason for refusing this gateway's credentials (wrong cluster id, wrong secret), null while it accepts
    /// them: set by a refused call, cleared by any answer.
    /// </summary>
    public string? CredentialsRefused => Volatile.Read(ref _credentialsRefused);

    private string? _credentialsRefused;

    // The refusal last logged: logged again only when the node's reason changes.
    private string? _loggedRefusal;

    /// <summary>
    /// Takes in a failed call: a refusal of the credentials is recorded, and logged as an error when the node's reason
    /// changes (once, not at every stream retry). Returns whether it was one.
    /// </summary>
    public bool NoteIfCredentialsRefused(Exception failure)
    {
        if (failure is not RpcException { StatusCode: StatusCode.PermissionDenied or StatusCode.Unauthenticated } refused)
        {
            // Unreachable, or failed otherwise: whether it would take the credentials is unknown again, and a gateway
            // must not answer at once on the word of nodes it can no longer hear.
            Volatile.Write(ref _credentialsRefused, null);
            return false;
        }

        var reason = refused.Status.Detail;
        Volatile.Write(ref _credentialsRefused, reason);
        if (Interlocked.Exchange(ref _loggedRefusal, reason) != reason)
        {
            Log.CredentialsRefused(_logger, Address, reason, ClusterOptions.Section);
        }

        return true;
    }

    /// <summary>The node answered a call: it accepts the credentials.</summary>
    public void NoteAnswered()
    {
        if (Volatile.Read(ref _credentialsRefused) is not null)
        {
            Volatile.Write(ref _credentialsRefused, null);
        }
    }

    /// <summary>See <see cref="ClusterOptions.BreakerSamplingMilliseconds"/>.</summary>
    internal static TimeSpan SamplingDuration(ClusterOptions options) => TimeSpan.FromMilliseconds(options.BreakerSamplingMilliseconds);

    public string Address { get; }

    /// <summary>The node's id once a status reply named it (0 until then).</summary>
    public ulong NodeId { get; set; }

    /// <summary>One of the configured <see cref="ClusterOptions.Nodes"/>: kept whatever the membership says, as the way back to the cluster.</summary>
    public bool IsSeed { get; }

    /// <summary>False once the leader's membership no longer lists this node (removed): it then gets no commands.</summary>
    public bool IsMember => Volatile.Read(ref _notListedSince) == 0;

    // When the leader's membership stopped listing this node (a Stopwatch timestamp), 0 while it is listed.
    private long _notListedSince;

    /// <summary>Takes in whether the leader's latest membership lists this node.</summary>
    public void SetListed(bool listed)
    {
        if (listed)
        {
            Volatile.Write(ref _notListedSince, 0);
        }
        else
        {
            // The first time it is missing counts: a membership that keeps leaving it out does not restart the clock.
            Interlocked.CompareExchange(ref _notListedSince, Math.Max(1, System.Diagnostics.Stopwatch.GetTimestamp()), 0);
        }
    }

    /// <summary>
    /// Not a seed, and left out of the membership for at least <paramref name="grace"/>: the gateway lets go of it.
    /// </summary>
    public bool RemovedFor(TimeSpan grace) =>
        !IsSeed && Volatile.Read(ref _notListedSince) is var since and not 0 && System.Diagnostics.Stopwatch.GetElapsedTime(since) >= grace;

    public Cache.CacheClient Client { get; }

    public Metadata Headers => _headers;

    /// <summary>
    /// An attempt at this node: its per-attempt timeout inside this node's circuit breaker. After repeated failures
    /// (timeouts included), attempts fail fast here and go to other nodes.
    /// </summary>
    public ResiliencePipeline Breaker { get; }

    /// <summary>False while the breaker is open.</summary>
    public bool Healthy => _breakerState.CircuitState is CircuitState.Closed or CircuitState.HalfOpen;

    /// <summary>
    /// Whether to send this node commands it is chosen for, rather than another node: its breaker is closed, or open
    /// with its break over, so that the next attempt is the probe that lets it back in. Not while half-open: the probe
    /// is out, and the breaker refuses everything else until it is answered.
    /// </summary>
    /// <remarks>
    /// Without the second case a node whose breaker opened was never chosen again while another member was healthy:
    /// the breaker leaves the open state only when an attempt is made through it.
    /// </remarks>
    public bool ReadyForAttempt => _breakerState.CircuitState switch
    {
        CircuitState.Closed => true,
        CircuitState.Open => TimeProvider.System.GetUtcNow().UtcTicks >= Volatile.Read(ref _probeDueTicks),
        _ => false,
    };

    /// <summary>Commands queued for this node's streams and not yet written (abandoned ones included until the writer drops them).</summary>
    internal int CommandsQueued => Volatile.Read(ref _queued);

    /// <summary>Commands written to this node's streams whose reply is still awaited.</summary>
    internal int CommandsSent => Volatile.Read(ref _sent);

    /// <summary>The longest delay any of this node's streams waited before it last reopened.</summary>
    internal TimeSpan LongestLastReconnectDelay => _streams.Max(stream => stream.LastReconnectDelay);

    /// <summary>
    /// One attempt at this node, through its <see cref="Breaker"/>: sends the commands and completes when every reply
    /// is in <paramref name="replies"/> (same order). It fails with <see cref="NodeUnreachableException"/> when the
    /// stream breaks, with <see cref="NodeBacklogFullException"/> (before the breaker, which it does not count against)
    /// when the node already holds <see cref="ClusterOptions.MaxCommandsPerNode"/> commands, and as the breaker fails
    /// it (open, or the attempt timed out), or is cancelled by the token; the replies that did arrive by then are in
    /// place, the rest are null.
    /// </summary>
    public Task AttemptAsync(IReadOnlyList<Command> commands, Reply?[] replies, CancellationToken cancellationToken)
    {
        var count = commands.Count;
        var held = Interlocked.Add(ref _queued, count) + Volatile.Read(ref _sent);
        if (held > _maxCommands && held > count)
        {
            // A stalled node's writer is stuck (HTTP/2 flow control) and its queue would grow for as long as load comes:
            // refused here instead, at once. One batch always goes to a node holding nothing, however large.
            Interlocked.Add(ref _queued, -count);
            return Task.FromException(new NodeBacklogFullException(
                $"not sent: {Address} already has {held - count} commands queued or unanswered (Cluster:MaxCommandsPerNode is {_maxCommands})"));
        }

        var stream = _streams[(int)((ulong)Interlocked.Increment(ref _nextStream) % (ulong)_streams.Length)];
        return AttemptThroughBreakerAsync(stream, new Pending(commands, replies), cancellationToken);
    }

    private async Task AttemptThroughBreakerAsync(CommandStream stream, Pending pending, CancellationToken cancellationToken)
    {
        try
        {
            await Breaker.ExecuteAsync(
                static (state, token) => new ValueTask(state.stream.SendAsync(state.pending, token)), (stream, pending), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (!pending.Queued)
            {
                // Never reached the queue (the breaker refused it, or the stream is closing): its writer will not count it out.
                Interlocked.Add(ref _queued, -pending.Count);
            }
        }
    }

    /// <summary>
    /// Closes the streams (the gateway stops, or lets go of a removed node): commands in flight on them fail with
    /// <see cref="NodeUnreachableException"/> as on a broken stream, so their batches retry them elsewhere.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        foreach (var stream in _streams)
        {
            await stream.DisposeAsync().ConfigureAwait(false);
        }

        _channel.Dispose();
        _stopping.Dispose();
    }

    /// <summary>
    /// One batch of commands awaiting its replies. Once its caller stops waiting (<see cref="Abandon"/>) it lets go of
    /// the commands and the replies array, and a reply still arriving for it is dropped.
    /// </summary>
    private sealed class Pending(IReadOnlyList<Command> commands, Reply?[] replies) : TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        // Taken by the writer while it sends commands of this batch and by Abandon: either the writer sees the batch
        // abandoned and sends nothing more, or Abandon sees every id the writer put in the in-flight table.
        private readonly Lock _gate = new();
        private IReadOnlyList<Command>? _commands = commands;
        private Reply?[]? _replies = replies;
        private int _awaited = commands.Count;

        public int Count { get; } = commands.Count;

        /// <summary>Commands before this one were sent (a batch too large for one message is sent in parts); under the gate.</summary>
        public int NextToSend { get; private set; }

        /// <summary>In a stream's queue, whose writer takes it out of <see cref="NodeConnection.CommandsQueued"/>.</summary>
        public bool Queued { get; set; }

        /// <summary>Nobody waits for it any more (or it is done): nothing more of it is to be sent.</summary>
        public bool Finished => Task.IsCompleted || Volatile.Read(ref _commands) is null;

        /// <summary>
        /// Puts this batch's unsent commands that fit into <paramref name="batch"/>, each under a new id in
        /// <paramref name="inFlight"/>; false when the message is full before the last one. Adds nothing once the
        /// batch is finished.
        /// </summary>
        public bool AddTo(CommandBatch batch, ref int bytes, NodeConnection node, ConcurrentDictionary<ulong, InFlight> inFlight)
        {
            lock (_gate)
            {
                if (_commands is not { } commands || Task.IsCompleted)
                {
                    return true;
                }

                for (var i = NextToSend; i < commands.Count; i++)
                {
                    var command = commands[i];
                    var size = SizeOnAnyAttempt(command);
                    if (TooLargeRefusal(size, node._maxBatchBytes) is { } refusal)
                    {
                        // No message could carry it: refused here, so that the node does not break the stream over it.
                        // (The cluster refuses such commands before choosing a node; this guards the stream itself.)
                        Deliver(i, refusal);
                        NextToSend = i + 1;
                        continue;
                    }

                    if (batch.Commands.Count > 0 && (bytes + size > node._maxBatchBytes || batch.Commands.Count >= node._maxBatch))
                    {
                        NextToSend = i;
                        return false;
                    }

                    // Ids are unique across the gateway: the node echoes them, and a retry elsewhere gets a new one, so a
                    // late reply to an abandoned attempt can never be taken for another command's.
                    var id = node._ids.Next();
                    command.Id = id;
                    Interlocked.Increment(ref node._sent); // before its reply can take it off
                    inFlight[id] = new InFlight(this, i);
                    batch.Commands.Add(command);
                    bytes += size;
                    NextToSend = i + 1;
                }

                return true;
            }
        }

        /// <summary>
        /// Its caller stopped waiting (the attempt timed out, its client left, or the stream failed it): its commands
        /// still in the in-flight table leave it now, rather than when a reply comes (never, from a stalled node) or the
        /// stream breaks. Returns how many left.
        /// </summary>
        public int Abandon(ConcurrentDictionary<ulong, InFlight> inFlight)
        {
            IReadOnlyList<Command>? commands;
            int sent;
            lock (_gate)
            {
                commands = _commands;
                _commands = null;
                Volatile.Write(ref _replies, null);
                sent = NextToSend;
            }

            var removed = 0;
            for (var i = 0; commands is not null && i < sent; i++)
            {
                // Each command still has the id it was sent under: a retry gives it a new one only once this attempt is
                // over. (One refused as too large was never sent; its id is in no table.) A reply taken off the table
                // meanwhile was dropped by Deliver, or reached this batch's own replies.
                if (inFlight.TryRemove(commands[i].Id, out _))
                {
                    removed++;
                }
            }

            return removed;
        }

        public void Deliver(int index, Reply reply)
        {
            // Each attempt has its own replies array and its commands their own ids: a reply can only ever land in its
            // own command's place, and once the batch is abandoned, nowhere.
            if (Volatile.Read(ref _replies) is not { } replies)
            {
                return;
            }

            Volatile.Write(ref replies[index], reply);
            if (Interlocked.Decrement(ref _awaited) == 0)
            {
                TrySetResult();
            }
        }
    }

    // The most bytes a command's id and per-attempt flags take in a message: each attempt gives it a new id, and a retry
    // may set forward_to_leader and session_must_exist (tag and value: 1 + 10 for the id, 1 + 1 for each flag).
    private const int MaxAttemptFieldBytes = 11 + 2 + 2;

    /// <summary>
    /// What <paramref name="command"/> takes in a message on whichever attempt, so that the size check gives every
    /// attempt the same verdict: a retry refused as too large after an attempt that may have applied would tell the
    /// client "not applied" when it cannot know.
    /// </summary>
    internal static int SizeOnAnyAttempt(Command command)
    {
        var attemptFields = (command.Id != 0 ? 1 + CodedOutputStream.ComputeUInt64Size(command.Id) : 0)
            + (command.ForwardToLeader ? 2 : 0)
            + (command.SessionMustExist ? 2 : 0);
        // The body with the largest attempt fields, then its framing (a tag and its length, whose own size depends on it).
        var body = command.CalculateSize() - attemptFields + MaxAttemptFieldBytes;
        return 1 + CodedOutputStream.ComputeLengthSize(body) + body;
    }

    /// <summary>The refusal of a command of <paramref name="size"/> bytes (<see cref="SizeOnAnyAttempt"/>) that no message could carry; null when it fits.</summary>
    internal static Reply? TooLargeRefusal(int size, int maxItemBytes) => size > maxItemBytes
        ? new Reply { Error = $"ERR command too large: {size} bytes, over the cluster's limit of {maxItemBytes} (Dcache:Gateway:Cluster:MaxMessageBytes less header room)" }
        : null;

    /// <summary>Where a reply goes: its batch and its place there.</summary>
    private readonly record struct InFlight(Pending Batch, int Index);

    /// <summary>One bidirectional stream with its own queue, writer loop and reader loop.</summary>
    private sealed class CommandStream : IAsyncDisposable
    {

        private readonly NodeConnection _node;
        private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
        private readonly ConcurrentDictionary<ulong, InFlight> _inFlight = new();
        private readonly Task _pump;

        // A batch too large for one message, with only part of it written (the writer loop's alone).
        private Pending? _partlySent;

        // Set by the reply reader when the open stream delivers a reply: a stream that worked restarts the backoff.
        private int _answeredSinceOpen;

        // Only the pump uses it. Without the restart on an answer, a gateway that had seen a few breaks in its life
        // waited the longest delay after every later one.
        private readonly ReconnectBackoff _backoff = new(TimeSpan.FromMilliseconds(10), TimeSpan.FromMilliseconds(500));

        public CommandStream(NodeConnection node)
        {
            _node = node;
            _pump = Task.Run(PumpAsync);
        }

        /// <summary>How long the stream waited before it last reopened (zero until it broke once).</summary>
        internal TimeSpan LastReconnectDelay => _backoff.Last;

        public async Task SendAsync(Pending pending, CancellationToken cancellationToken)
        {
            if (pending.Count == 0)
            {
                return;
            }

            if (!_queue.Writer.TryWrite(pending))
            {
                throw new NodeUnreachableException($"the gateway is closing its stream to {_node.Address}", maybeDelivered: false);
            }

            pending.Queued = true;
            try
            {
                // The attempt timed out (the breaker's timeout strategy turns that into a TimeoutRejectedException, which
                // counts against the node) or the caller gave up (a plain cancellation, which does not).
                using var registration = cancellationToken.Register(static state => ((Pending)state!).TrySetCanceled(), pending);
                await pending.Task.ConfigureAwait(false);
            }
            finally
            {
                if (!pending.Task.IsCompletedSuccessfully)
                {
                    // Answered in full, it left the in-flight table reply by reply; otherwise what is left of it goes now.
                    Interlocked.Add(ref _node._sent, -pending.Abandon(_inFlight));
                }
            }
        }

        private async Task PumpAsync()
        {
            var token = _node._stopping.Token;
            while (!token.IsCancellationRequested)
            {
                try
                {
                    if (!await _queue.Reader.WaitToReadAsync(token).ConfigureAwait(false))
                    {
                        return;
                    }

                    using var call = _node.Client.Execute(_node._headers, cancellationToken: token);
                    using var streamOver = CancellationTokenSource.CreateLinkedTokenSource(token);
                    var reader = ReadRepliesAsync(call.ResponseStream, streamOver.Token);
                    var writer = WriteCommandsAsync(call.RequestStream, streamOver.Token);
                    var finished = await Task.WhenAny(reader, writer).ConfigureAwait(false);

                    // The other half ends before the stream is given up: a writer left waiting on the queue would take
                    // the next stream's commands and write them to this dead call, where no reply can ever come.
                    await streamOver.CancelAsync().ConfigureAwait(false);
                    call.Dispose();
                    await Task.WhenAll(reader, writer).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                    await finished.ConfigureAwait(false); // surfaces the failure that ended the stream
                    throw new IOException("the command stream ended");
                }
                catch (Exception ex) when (token.IsCancellationRequested && ex is OperationCanceledException or RpcException)
                {
                    FailInFlight(new NodeUnreachableException($"the gateway closed its connection to {_node.Address}", maybeDelivered: true));
                    return;
                }
                catch (Exception ex) when (ex is RpcException or IOException or HttpRequestException or InvalidOperationException)
                {
                    // The node checks credentials before it reads a command: a refused stream delivered none.
                    var refused = _node.NoteIfCredentialsRefused(ex);
                    if (!refused)
                    {
                        Log.StreamFailed(_node._logger, _node.Address, ex.Message);
                    }

                    FailInFlight(new NodeUnreachableException($"lost the stream to {_node.Address}: {ex.Message}", maybeDelivered: !refused, ex));
                    try
                    {
                        await Task.Delay(_backoff.AfterBreak(answered: Interlocked.Exchange(ref _answeredSinceOpen, 0) != 0), token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                }
            }
        }

        private async Task WriteCommandsAsync(IClientStreamWriter<CommandBatch> output, CancellationToken token)
        {
            try
            {
                await WriteBatchesAsync(output, token).ConfigureAwait(false);
            }
            catch (Exception ex) when (_partlySent is { } pending)
            {
                // Taken off the queue and only partly in flight: the stream's failure must reach it too.
                _partlySent = null;
                pending.TrySetException(new NodeUnreachableException($"lost the stream to {_node.Address}: {ex.Message}", maybeDelivered: true, ex));
                throw;
            }
        }

        private async Task WriteBatchesAsync(IClientStreamWriter<CommandBatch> output, CancellationToken token)
        {
            var reader = _queue.Reader;
            while (_partlySent is not null || await reader.WaitToReadAsync(token).ConfigureAwait(false))
            {
                if (_partlySent is { Finished: true })
                {
                    _partlySent = null; // its caller gave up meanwhile
                }

                var batch = new CommandBatch();
                var bytes = 0;
                while (batch.Commands.Count < _node._maxBatch && (_partlySent ?? Next(reader)) is { } pending)
                {
                    _partlySent = null;
                    if (!pending.AddTo(batch, ref bytes, _node, _inFlight))
                    {
                        _partlySent = pending; // the message is full: the rest goes in the next one
                        break;
                    }
                }

                if (batch.Commands.Count > 0)
                {
                    await output.WriteAsync(batch, token).ConfigureAwait(false);
                }
            }
        }

        private Pending? Next(ChannelReader<Pending> reader)
        {
            while (reader.TryRead(out var pending))
            {
                Interlocked.Add(ref _node._queued, -pending.Count);
                if (!pending.Finished)
                {
                    return pending;
                }

                // Timed out or cancelled while queued: not sent.
            }

            return null;
        }

        private async Task ReadRepliesAsync(IAsyncStreamReader<ReplyBatch> input, CancellationToken token)
        {
            while (await input.MoveNext(token).ConfigureAwait(false))
            {
                var answered = 0;
                foreach (var reply in input.Current.Replies)
                {
                    // Not found: its attempt was abandoned (and its entry removed) before the reply came; dropped.
                    if (_inFlight.TryRemove(reply.Id, out var inFlight))
                    {
                        answered++;
                        inFlight.Batch.Deliver(inFlight.Index, reply);
                    }
                }

                Interlocked.Add(ref _node._sent, -answered);
                _node.NoteAnswered();
                if (answered > 0)
                {
                    Volatile.Write(ref _answeredSinceOpen, 1);
                }
            }
        }

        private void FailInFlight(Exception error)
        {
            var failed = 0;
            foreach (var id in _inFlight.Keys)
            {
                if (_inFlight.TryRemove(id, out var inFlight))
                {
                    failed++;
                    inFlight.Batch.TrySetException(error);
                }
            }

            Interlocked.Add(ref _node._sent, -failed);
        }

        public async ValueTask DisposeAsync()
        {
            _queue.Writer.TryComplete();
            try
            {
                // The connection's stopping token has ended the pump's stream; its writer must be gone before the queue
                // is drained here: the queue has a single reader.
                await _pump.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
            finally
            {
                while (_queue.Reader.TryRead(out var pending))
                {
                    Interlocked.Add(ref _node._queued, -pending.Count);
                    pending.TrySetException(new NodeUnreachableException($"the gateway closed its connection to {_node.Address}", maybeDelivered: false));
                }
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Warning, Message = "Command stream to {Address} failed: {Reason}")]
        public static partial void StreamFailed(ILogger logger, string address, string reason);

        [LoggerMessage(Level = LogLevel.Error, Message = "Node {Address} refuses this gateway's credentials: {Reason}. {Section}:ClusterId and ClusterSecret must be the nodes' ClusterId and ClusterSecret")]
        public static partial void CredentialsRefused(ILogger logger, string address, string reason, string section);
    }
}
