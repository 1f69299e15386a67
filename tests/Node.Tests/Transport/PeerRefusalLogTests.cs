using Dcache.Node.Transport;
using Dcache.Raft;
using Grpc.Core;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Node.Tests.Transport;

/// <summary>
/// A peer refused for its configuration redials about once a second for as long as it runs: the refusal is an error
/// worth one line per peer and cause, not one per redial.
/// </summary>
public sealed class PeerRefusalLogTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_peer_with_other_cache_settings_is_refused_at_every_stream_and_logged_once_per_settings()
    {
        var logs = new ErrorLog();
        var node = new ClusterCredentials("test", "secret", cacheSettings: "max-memory=100;session-timeout=60");
        await using var app = await GrpcTestServer.StartRaftTransportAsync(new AcceptingInbox(1), node, logs);
        try
        {
            using var channel = Dcache.Protocol.GrpcChannels.ForNode($"http://127.0.0.1:{GrpcTestServer.PortOf(app)}");
            var client = new Wire.RaftTransport.RaftTransportClient(channel);
            var peer = new ClusterCredentials("test", "secret", cacheSettings: "max-memory=200;session-timeout=60");
            for (var redial = 0; redial < 3; redial++)
            {
                Assert.Equal(StatusCode.FailedPrecondition, await RefusalAsync(client, peer));
            }

            Assert.Contains("max-memory=200", Assert.Single(logs.Entries), StringComparison.Ordinal);

            // Restarted with other settings, still not the cluster's: a new cause, a new line.
            var changed = new ClusterCredentials("test", "secret", cacheSettings: "max-memory=300;session-timeout=60");
            Assert.Equal(StatusCode.FailedPrecondition, await RefusalAsync(client, changed));
            Assert.Equal(StatusCode.FailedPrecondition, await RefusalAsync(client, changed));
            Assert.Equal(2, logs.Entries.Count);
            Assert.Contains("max-memory=300", logs.Entries.Last(), StringComparison.Ordinal);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    private static async Task<StatusCode> RefusalAsync(Wire.RaftTransport.RaftTransportClient client, ClusterCredentials sender)
    {
        using var call = client.Send(sender.ToHeaders(from: 2), DateTime.UtcNow + Patience);
        var refused = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await call.RequestStream.WriteAsync(RaftMessageCodec.ToWire(new Message { Type = MessageType.Heartbeat, From = 2, To = 1, Term = 1 }));
            await call.RequestStream.CompleteAsync();
            await call.ResponseAsync;
        });
        return refused.StatusCode;
    }
}
