using System.Threading.Channels;
using Dcache.Node.Consensus;
using Dcache.Raft;
using Grpc.Core;
using Dcache.Protocol;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Node.Transport;

/// <summary>What the transport tells the Raft driver about deliveries.</summary>
public interface ITransportEvents
{
    void PeerUnreachable(ulong peer);

    /// <summary>A snapshot sent in <paramref name="term"/> (the leader's, when it was sent) reached the peer or not.</summary>
    void SnapshotSent(ulong peer, ulong term, bool succeeded);
}

/// <summary>A source of snapshot data to stream to a peer, chunk by chunk.</summary>
public interface ISnapshotSource
{
    SnapshotMetadata Metadata { get; }

    IAsyncEnumerable<ReadOnlyMemory<byte>> ReadChunksAsync(CancellationToken cancellationToken);

    ulong Checksum { get; }
}

/// <summary>
/// Outbound Raft traffic: one long-lived gRPC stream per peer so that Appends pipeline, a bounded queue in front of
/// it (Raft tolerates loss, so a full queue drops), and reconnection with backoff. Snapshots go in their own call.
/// </summary>
public sealed partial class PeerTransport(ulong selfId, string selfAddress, ClusterCredentials credentials, int maxMessageBytes, byte entryFormat, PeerClocks clocks, ITransportEvents events, ILogger<PeerTransport> logger) : IAsyncDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<ulong, PeerSender> _peers = [];
    private readonly CancellationTokenSource _stopping = new();
    private int _disposed;
    // Send is called by the driver loop only, so this needs no lock.
    private readonly RecentWireEntries _recentEntries = new();

    /// <summary>Makes the transport know exactly these peers (not including this node).</summary>
    public void SetPeers(IReadOnlyDictionary<ulong, string> addresses)
    {
        lock (_lock)
        {
            foreach (var (id, address) in addresses)
            {
                if (id == selfId)
                {
                    continue;
                }

                if (_peers.TryGetValue(id, out var existing))
                {
                    if (existing.Address == address)
                    {
                        continue;
                    }

                    _ = existing.DisposeAsync().AsTask();
                }

                _peers[id] = new PeerSender(this, id, address);
            }

            foreach (var id in _peers.Keys.Where(id => !addresses.ContainsKey(id)).ToList())
            {
                // A removed peer still gets what was queued for it: the Append carrying the commit of its own
                // removal is queued just before the removal applies here, and is how it learns to stand down.
                _ = _peers[id].RetireAsync(RetireDrainTime);
                _peers.Remove(id);
            }
        }
    }

    /// <summary>
    /// Queues a message for its peer; never blocks. A message to an unknown peer is dropped and reported. Called by the
    /// driver loop only. <paramref name="readTimeMs"/> (0: none) is the leader's time a ReadIndex response carries.
    /// </summary>
    public void Send(Message message, long readTimeMs = 0)
    {
        PeerSender? sender;
        lock (_lock)
        {
            _peers.TryGetValue(message.To, out sender);
        }

        if (sender is null || !sender.TryEnqueue(RaftMessageCodec.ToWire(message, _recentEntries, readTimeMs)))
        {
            events.PeerUnreachable(message.To);
        }
    }

    /// <summary>
    /// Streams a snapshot to its peer in the background; reports the outcome through <see cref="ITransportEvents.SnapshotSent"/>.
    /// <paramref name="leadership"/> ends it when the sender stops leading: the peer takes one snapshot at a time, and
    /// would refuse the new leader's until a deposed one's finished, only to drop it as from an old term.
    /// </summary>
    public void SendSnapshot(Message message, ISnapshotSource source, CancellationToken leadership = default)
    {
        PeerSender? sender;
        lock (_lock)
        {
            _peers.TryGetValue(message.To, out sender);
        }

        if (sender is null)
        {
            events.SnapshotSent(message.To, message.Term, succeeded: false);
            return;
        }

        _ = Task.Run(async () =>
        {
            // Reported whatever happens: a leader that never hears how a snapshot went keeps the follower waiting for
            // it (its progress stays in the snapshot state) until leadership changes.
            var ok = false;
            try
            {
                using var ended = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token, leadership);
                ok = await sender.SendSnapshotAsync(message, source, ended.Token).ConfigureAwait(false);
            }
            catch (ObjectDisposedException)
            {
                // The sender was replaced before this began: its member moved (member update) or left.
            }
            finally
            {
                events.SnapshotSent(message.To, message.Term, ok);
            }
        }, CancellationToken.None); // runs even if cancelled at once: the outcome must be reported
    }

    private static readonly TimeSpan RetireDrainTime = TimeSpan.FromSeconds(1);

    /// <summary>How long the link to <paramref name="peer"/> waited before it last dialled again (zero until it broke once, or for an unknown peer).</summary>
    internal TimeSpan LastReconnectDelay(ulong peer)
    {
        lock (_lock)
        {
            return _peers.TryGetValue(peer, out var sender) ? sender.LastReconnectDelay : TimeSpan.Zero;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        List<PeerSender> senders;
        lock (_lock)
        {
            senders = [.. _peers.Values];
            _peers.Clear();
        }

        foreach (var sender in senders)
        {
            await sender.DisposeAsync().ConfigureAwait(false);
        }

        _stopping.Dispose();
    }

    private sealed class PeerSender : IAsyncDisposable
    {
        private readonly PeerTransport _owner;
        private readonly ulong _peer;
        private readonly GrpcChannel _channel;
        private readonly Wire.RaftTransport.RaftTransportClient _client;
        // Wait mode, written only with TryWrite: a full queue refuses the message (reported as the peer unreachable).
        // DropWrite would drop it and still answer true, so nothing heard of the loss.
        private readonly Channel<Wire.RaftMessage> _queue = Channel.CreateBounded<Wire.RaftMessage>(
            new BoundedChannelOptions(16_384) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true });
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _pump;

        // Only the pump uses it.
        private readonly ReconnectBackoff _backoff = new(TimeSpan.FromMilliseconds(20), TimeSpan.FromSeconds(1));

        // The last refusal warned of, until a stream is taken again (the pump's thread only).
        private string? _lastRefusal;

        // The last snapshot send failure warned of, until a send is answered (one send at a time per peer).
        private string? _lastSnapshotFailure;

        public PeerSender(PeerTransport owner, ulong peer, string address)
        {
            _owner = owner;
            _peer = peer;
            Address = address;
            _channel = GrpcChannels.ForNode(address, owner.MaxMessageBytes);
            _client = new Wire.RaftTransport.RaftTransportClient(_channel);
            _pump = Task.Run(PumpAsync);
        }

        public string Address { get; }

        internal TimeSpan LastReconnectDelay => _backoff.Last;

        public bool TryEnqueue(Wire.RaftMessage message) => _queue.Writer.TryWrite(message);

        private async Task PumpAsync()
        {
            var token = _stop.Token;
            while (!token.IsCancellationRequested)
            {
                // The peer's headers, sent once it has taken the stream: the one sign, on a send-only stream, that the
                // peer is there (what this node writes may only have reached its own socket buffer).
                Task<Metadata>? accepted = null;
                try
                {
                    // Wait for traffic before dialling, so an idle or absent peer costs nothing.
                    if (!await _queue.Reader.WaitToReadAsync(token).ConfigureAwait(false))
                    {
                        return;
                    }

                    using var call = _client.Send(_owner.Headers, cancellationToken: token);
                    accepted = call.ResponseHeadersAsync;
                    while (true)
                    {
                        while (_queue.Reader.TryRead(out var message))
                        {
                            (message.SenderClockMs, message.EchoClockMs, message.EchoHeldMs) = _owner.Clocks.ForMessageTo(_peer);
                            if (_owner.Clocks.PublishedClusterOffsetMs is { } clusterOffset)
                            {
                                message.ClusterOffsetMs = clusterOffset;
                            }
                            else
                            {
                                message.ClearClusterOffsetMs();
                            }

                            await call.RequestStream.WriteAsync(message, token).ConfigureAwait(false);
                        }

                        if (!await _queue.Reader.WaitToReadAsync(token).ConfigureAwait(false))
                        {
                            // Retired: what was queued is written; the peer's summary says it has read all of it. Disposed
                            // before, the call would be reset and the peer would drop what it had not read yet (the Append
                            // that tells a removed peer its removal committed is the last one).
                            await call.RequestStream.CompleteAsync().ConfigureAwait(false);
                            await call.ResponseAsync.ConfigureAwait(false);
                            return;
                        }
                    }
                }
                catch (OperationCanceledException) when (token.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex) when (ex is RpcException or IOException or HttpRequestException or InvalidOperationException or ObjectDisposedException)
                {
                    Log.PeerStreamFailed(_owner.Logger, _peer, Address, ex.Message);
                    WarnIfRefused(ex);
                    // Whatever was queued is lost with the stream; Raft retransmits what matters.
                    while (_queue.Reader.TryRead(out _))
                    {
                    }

                    // A peer that restarted broke the stream, and its new process may run another clock.
                    _owner.Clocks.Forget(_peer);
                    _owner.Events.PeerUnreachable(_peer);
                    var answered = accepted is { IsCompletedSuccessfully: true } && accepted.Result.GetValue(RaftTransportService.StreamTakenHeader) is not null;
                    if (answered)
                    {
                        _lastRefusal = null;
                    }

                    try
                    {
                        await Task.Delay(_backoff.AfterBreak(answered), token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                }
            }
        }

        /// <summary>
        /// A peer that refuses this node's traffic (wrong cluster id or secret, a message for another node at that
        /// address, removed, different cache settings, too large) is a misconfiguration nothing else reports at the
        /// default log level: said once per distinct refusal, not at every redial.
        /// </summary>
        private void WarnIfRefused(Exception failure)
        {
            if (failure is RpcException { StatusCode: StatusCode.PermissionDenied or StatusCode.Unauthenticated or StatusCode.InvalidArgument
                or StatusCode.FailedPrecondition or StatusCode.ResourceExhausted } refusal && refusal.Status.Detail != _lastRefusal)
            {
                _lastRefusal = refusal.Status.Detail;
                Log.PeerRefusedStream(_owner.Logger, _peer, Address, refusal.StatusCode, refusal.Status.Detail);
            }
        }

        public async Task<bool> SendSnapshotAsync(Message message, ISnapshotSource source, CancellationToken cancellationToken)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stop.Token);
            try
            {
                using var call = _client.InstallSnapshot(_owner.Headers, cancellationToken: linked.Token);
                await call.RequestStream.WriteAsync(new Wire.SnapshotChunk { Offset = 0, Message = RaftMessageCodec.ToWire(message) }, linked.Token).ConfigureAwait(false);
                ulong offset = 0;
                await foreach (var chunk in source.ReadChunksAsync(linked.Token).ConfigureAwait(false))
                {
                    await call.RequestStream.WriteAsync(new Wire.SnapshotChunk { Offset = offset, Data = Google.Protobuf.ByteString.CopyFrom(chunk.Span) }, linked.Token).ConfigureAwait(false);
                    offset += (ulong)chunk.Length;
                }

                await call.RequestStream.WriteAsync(new Wire.SnapshotChunk { Offset = offset, Last = true, Checksum = source.Checksum }, linked.Token).ConfigureAwait(false);
                await call.RequestStream.CompleteAsync().ConfigureAwait(false);
                var reply = await call.ResponseAsync.ConfigureAwait(false);
                _lastSnapshotFailure = null;
                if (!reply.Accepted)
                {
                    Log.SnapshotRefused(_owner.Logger, _peer, reply.Error);
                }

                return reply.Accepted;
            }
            catch (Exception ex) when (ex is RpcException or IOException or HttpRequestException or OperationCanceledException or InvalidOperationException
                or Dcache.Storage.StorageCorruptionException)
            {
                // A stored snapshot that fails its checks is reported too (it was an unobserved exception): the send is
                // failed, and the next automatic snapshot replaces it.
                // Said once per distinct reason: the core sends the snapshot again at the peer's next answer, about
                // every heartbeat while, say, the peer writes a snapshot of its own.
                if (ex.Message != _lastSnapshotFailure)
                {
                    _lastSnapshotFailure = ex.Message;
                    Log.SnapshotSendFailed(_owner.Logger, _peer, message.Snapshot?.Index ?? 0, ex.Message);
                }

                return false;
            }
        }

        /// <summary>Sends what is queued (for at most <paramref name="drainTime"/>), then closes.</summary>
        public async Task RetireAsync(TimeSpan drainTime)
        {
            _queue.Writer.TryComplete();
            // The pump ends by itself once the queue is drained (or keeps failing to connect: then the delay ends it).
            await Task.WhenAny(_pump, Task.Delay(drainTime)).ConfigureAwait(false);
            await DisposeAsync().ConfigureAwait(false);
        }

        public async ValueTask DisposeAsync()
        {
            _queue.Writer.TryComplete();
            await _stop.CancelAsync().ConfigureAwait(false);
            try
            {
                await _pump.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }

            _channel.Dispose();
            _stop.Dispose();
        }
    }

    private Metadata Headers => credentials.ToHeaders(selfId, selfAddress, entryFormat);

    private ILogger Logger => logger;

    private PeerClocks Clocks => clocks;

    private ITransportEvents Events => events;

    private int MaxMessageBytes => maxMessageBytes;

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Debug, Message = "Raft stream to node {Peer} at {Address} failed: {Reason}")]
        public static partial void PeerStreamFailed(ILogger logger, ulong peer, string address, string reason);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Node {Peer} at {Address} refused this node's Raft traffic ({Code}): {Reason}")]
        public static partial void PeerRefusedStream(ILogger logger, ulong peer, string address, StatusCode code, string reason);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Node {Peer} refused the snapshot: {Reason}")]
        public static partial void SnapshotRefused(ILogger logger, ulong peer, string reason);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Sending snapshot {Index} to node {Peer} failed: {Reason}")]
        public static partial void SnapshotSendFailed(ILogger logger, ulong peer, ulong index, string reason);
    }
}
