using System.Net.Http;
using System.Net.Sockets;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Protocol;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Transport;

/// <summary>
/// Sends a write a gateway asked a follower to forward (<c>Command.forward_to_leader</c>: the gateway cannot reach the
/// leader) to the leader, as one unary <c>ExecuteOne</c> call with the flag cleared, so it travels one hop at most: a node
/// that no longer leads answers NotLeader, and that reply goes back as it is. The leader's reply is the write's reply.
/// A forward that surely never reached the leader (its connection could not be opened) is Unavailable, safe to retry;
/// any other failure leaves the outcome unknown. The write keeps its session, so a gateway's retry of it still applies
/// once. Calls run off the driver loop, on one channel per leader address, reused until the leader moves elsewhere.
/// </summary>
public sealed partial class LeaderForwarder(ClusterCredentials credentials, int maxMessageBytes, NodeMetrics metrics, ILogger<LeaderForwarder> logger) : IAsyncDisposable
{
    private readonly Metadata _headers = credentials.ToHeaders();
    private readonly Lock _lock = new();
    private LeaderChannel? _current;
    private bool _disposed;

    /// <summary>
    /// Forwards <paramref name="command"/> (a write) to the leader, node <paramref name="leaderId"/> at
    /// <paramref name="leaderAddress"/>, waiting <paramref name="timeLeft"/> at most; the reply goes to
    /// <paramref name="replies"/>. Never blocks: called on the driver loop.
    /// </summary>
    public void Forward(Proto.Command command, ulong leaderId, string leaderAddress, TimeSpan timeLeft, IReplySink replies)
    {
        command.ForwardToLeader = false;
        var deadline = DateTime.UtcNow + timeLeft;
        _ = Task.Run(() => ForwardAsync(command, leaderId, leaderAddress, deadline, replies));
    }

    /// <summary>The leader is now at <paramref name="address"/> (null: none, or this node): a channel to anywhere else is let go.</summary>
    public void LeaderIs(string? address)
    {
        LeaderChannel? retired;
        lock (_lock)
        {
            if (_current is null || _current.Address == address)
            {
                return;
            }

            retired = Retire(_current);
            _current = null;
        }

        retired?.Dispose();
    }

    private async Task ForwardAsync(Proto.Command command, ulong leaderId, string leaderAddress, DateTime deadline, IReplySink replies)
    {
        Proto.Reply reply;
        if (Acquire(leaderAddress) is not { } channel)
        {
            reply = ReplyFactory.Failure(command.Id, Proto.FailureKind.Unavailable, "not applied: the node is shutting down");
        }
        else
        {
            try
            {
                reply = StartCall(channel, command, deadline) is { } call
                    ? await Answer(call, command.Id, leaderId, leaderAddress).ConfigureAwait(false)
                    // The channel was let go before the call could start (this node is stopping): nothing was sent.
                    : ReplyFactory.Failure(command.Id, Proto.FailureKind.Unavailable, "not applied: the node is shutting down");
            }
            finally
            {
                Release(channel);
            }
        }

        metrics.Forwarded(reply);
        replies.Complete(reply);
    }

    private AsyncUnaryCall<Proto.Reply>? StartCall(LeaderChannel channel, Proto.Command command, DateTime deadline)
    {
        try
        {
            return channel.Client.ExecuteOneAsync(command, _headers, deadline);
        }
        catch (ObjectDisposedException)
        {
            return null; // gRPC refuses a call on a disposed channel at once, before sending anything
        }
    }

    /// <summary>The leader's reply to <paramref name="call"/>, or what its failure means for the write: never left unanswered.</summary>
    private async Task<Proto.Reply> Answer(AsyncUnaryCall<Proto.Reply> call, ulong id, ulong leaderId, string leaderAddress)
    {
        using (call)
        {
            try
            {
                return await call.ResponseAsync.ConfigureAwait(false);
            }
            catch (RpcException ex) when (RefusedAsTooLarge(ex))
            {
                return new Proto.Reply { Id = id, Error = $"ERR command too large for the leader, node {leaderId}: {ex.Status.Detail} (its Dcache:Node:MaxMessageBytes is below this node's)" };
            }
            catch (RpcException ex)
            {
                Log.ForwardFailed(logger, leaderId, leaderAddress, ex.StatusCode, ex.Status.Detail);
                return NeverSent(ex)
                    ? ReplyFactory.Failure(id, Proto.FailureKind.Unavailable,
                        $"not applied: the write could not be forwarded to the leader, node {leaderId}: {ex.Status.Detail}")
                    : Unknown(id, leaderId, $"{ex.StatusCode} {ex.Status.Detail}");
            }
            catch (Exception ex) when (ex is ObjectDisposedException or OperationCanceledException or HttpRequestException or IOException or InvalidOperationException)
            {
                // Not gRPC's own status (the channel went away mid-call, say): the write may have reached the leader.
                Log.ForwardFailed(logger, leaderId, leaderAddress, StatusCode.Unknown, ex.Message);
                return Unknown(id, leaderId, ex.Message);
            }
        }
    }

    private static Proto.Reply Unknown(ulong id, ulong leaderId, string detail) =>
        ReplyFactory.Failure(id, Proto.FailureKind.OutcomeUnknown, $"the write was forwarded to the leader, node {leaderId}, and may or may not have applied: {detail}");

    /// <summary>
    /// True only when the call's connection could not be opened (refused, or no route to the host): then no byte of it
    /// left this node. gRPC's subchannel reports its failed connect as the socket's own error ("Error connecting to
    /// subchannel"), the HTTP handler as a connection error. A call that failed in any other way may have been delivered.
    /// </summary>
    private static bool NeverSent(RpcException failure) =>
        failure.StatusCode == StatusCode.Unavailable && failure.Status.DebugException is
            SocketException { SocketErrorCode: SocketError.ConnectionRefused or SocketError.HostUnreachable or SocketError.NetworkUnreachable }
            or HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError };

    /// <summary>
    /// The leader's gRPC server refused the message as over its MaxMessageBytes, before any handler ran. Replies cannot
    /// be what failed: this node's channel receives up to the largest limit any node may have.
    /// </summary>
    private static bool RefusedAsTooLarge(RpcException failure) =>
        failure.StatusCode == StatusCode.ResourceExhausted && failure.Status.Detail.StartsWith("Received message exceeds", StringComparison.Ordinal);

    private LeaderChannel? Acquire(string address)
    {
        LeaderChannel? retired = null;
        LeaderChannel current;
        lock (_lock)
        {
            if (_disposed)
            {
                return null;
            }

            if (_current?.Address != address)
            {
                retired = _current is { } previous ? Retire(previous) : null;
                _current = new LeaderChannel(address, GrpcChannels.ForNode(address, maxMessageBytes));
            }

            current = _current;
            current.Calls++;
        }

        retired?.Dispose();
        return current;
    }

    private void Release(LeaderChannel channel)
    {
        bool dispose;
        lock (_lock)
        {
            channel.Calls--;
            dispose = channel.Retired && channel.Calls == 0;
        }

        if (dispose)
        {
            channel.Dispose();
        }
    }

    /// <summary>Marks <paramref name="channel"/> as no longer the leader's; returns it when no call uses it (to dispose, outside the lock).</summary>
    private static LeaderChannel? Retire(LeaderChannel channel)
    {
        channel.Retired = true;
        return channel.Calls == 0 ? channel : null;
    }

    /// <summary>Ends every channel, and so every forward still in flight (its outcome unknown).</summary>
    public ValueTask DisposeAsync()
    {
        LeaderChannel? current;
        lock (_lock)
        {
            _disposed = true;
            current = _current;
            _current = null;
        }

        current?.Dispose();
        return ValueTask.CompletedTask;
    }

    private sealed class LeaderChannel(string address, GrpcChannel channel)
    {
        public string Address { get; } = address;

        public Proto.Cache.CacheClient Client { get; } = new(channel);

        /// <summary>Calls in flight on the channel (under the forwarder's lock).</summary>
        public int Calls;

        /// <summary>No longer the leader's channel: disposed once its last call ends (under the forwarder's lock).</summary>
        public bool Retired;

        public void Dispose() => channel.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Warning, Message = "Forwarding a write to the leader, node {LeaderId} at {Address}, failed: {Code} {Detail}")]
        public static partial void ForwardFailed(ILogger logger, ulong leaderId, string address, StatusCode code, string detail);
    }
}
