using Dcache.Node.Services;
using Dcache.Node.Transport;
using Dcache.Raft;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Node.Tests.Transport;

/// <summary>
/// Review 22: a node that closes while it receives a snapshot abandons it (session 21), but the abandonment left the
/// handler as an <see cref="OperationCanceledException"/>: the leader got UNKNOWN "Exception was thrown by handler" and the
/// stopping node logged an error with a stack trace, as a stopped node's admin calls did before session 18. It is
/// UNAVAILABLE with the reason now, which the leader takes as any failed send (it retries later).
/// </summary>
public sealed class InstallSnapshotStopTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_snapshot_being_received_when_the_node_closes_ends_unavailable_without_an_error_logged()
    {
        using var closing = new CancellationTokenSource();
        var inbox = new AcceptingInbox(1, closing.Token);
        var credentials = new ClusterCredentials("test", "secret");
        var errors = new ErrorLog();
        await using var app = await GrpcTestServer.StartRaftTransportAsync(inbox, credentials, errors);
        try
        {
            using var channel = Protocol.GrpcChannels.ForNode($"http://127.0.0.1:{GrpcTestServer.PortOf(app)}");
            using var call = await StartSnapshotAsync(channel, credentials);
            await inbox.FirstChunk.WaitAsync(Patience);

            await closing.CancelAsync();

            var refused = await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync.WaitAsync(Patience));
            Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
            Assert.True(inbox.Disposed, "the abandoned snapshot's writer was not disposed");
            Assert.Empty(errors.Entries);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    /// <summary>
    /// A snapshot from the leader while the node writes one of its own (the store writes one at a time): it escaped the
    /// handler as an InvalidOperationException, logged as an error with its stack at every attempt (about every
    /// heartbeat), and the leader saw UNKNOWN. A passing refusal now: UNAVAILABLE, saying why, nothing logged as an error.
    /// </summary>
    [Fact]
    public async Task A_snapshot_arriving_while_the_node_writes_its_own_is_refused_unavailable_without_an_error_logged()
    {
        var inbox = new AcceptingInbox(1) { RefuseSnapshotsWith = new Storage.SnapshotStoreBusyException("this node is writing another snapshot; try again shortly") };
        var credentials = new ClusterCredentials("test", "secret");
        var errors = new ErrorLog();
        await using var app = await GrpcTestServer.StartRaftTransportAsync(inbox, credentials, errors);
        try
        {
            using var channel = Protocol.GrpcChannels.ForNode($"http://127.0.0.1:{GrpcTestServer.PortOf(app)}");
            using var call = await StartSnapshotAsync(channel, credentials);

            var refused = await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync.WaitAsync(Patience));
            Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
            Assert.Equal("this node is writing another snapshot; try again shortly", refused.Status.Detail);
            Assert.Empty(errors.Entries);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    /// <summary>Opens an InstallSnapshot call from node 2 and sends its first chunk.</summary>
    private static async Task<AsyncClientStreamingCall<Wire.SnapshotChunk, Wire.InstallSnapshotReply>> StartSnapshotAsync(Grpc.Net.Client.GrpcChannel channel, ClusterCredentials credentials)
    {
        var call = new Wire.RaftTransport.RaftTransportClient(channel).InstallSnapshot(credentials.ToHeaders(from: 2), DateTime.UtcNow.Add(Patience));
        var snapshot = new Message { Type = MessageType.Snapshot, From = 2, To = 1, Term = 1, Snapshot = new SnapshotMetadata(100, 1, Membership.Of([1UL, 2UL])) };
        await call.RequestStream.WriteAsync(new Wire.SnapshotChunk { Offset = 0, Data = ByteString.CopyFrom(new byte[1024]), Message = RaftMessageCodec.ToWire(snapshot) });
        return call;
    }
}
