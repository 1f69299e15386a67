using Dcache.Node.Transport;
using Dcache.Raft;
using Grpc.Core;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Node.Tests.Transport;

/// <summary>
/// Nodes refuse Raft traffic from a node whose log was founded apart from theirs. A node that joined has no founding
/// record of its own: it takes its leader's, from the leader's traffic (Appends, heartbeats, snapshots) only. A vote
/// request may come from any node, one founded apart among them; taken from it, the record would make the joined node
/// refuse its real leader from then on.
/// </summary>
public sealed class FoundingLogTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_joined_node_takes_its_founding_record_from_a_leaders_heartbeat_and_not_from_a_vote_request()
    {
        var adopted = new List<string>();
        var joined = new ClusterCredentials("test", "secret", foundingLogAdopted: adopted.Add);
        await using var app = await GrpcTestServer.StartRaftTransportAsync(new AcceptingInbox(2), joined);
        try
        {
            using var channel = Dcache.Protocol.GrpcChannels.ForNode($"http://127.0.0.1:{GrpcTestServer.PortOf(app)}");
            var client = new Wire.RaftTransport.RaftTransportClient(channel);

            // Node 4, founded apart, campaigns.
            var apart = new ClusterCredentials("test", "secret", foundingLog: "bootstrap:apart");
            await SendAsync(client, apart, new Message { Type = MessageType.PreVote, From = 4, To = 2, Term = 3 });
            await SendAsync(client, apart, new Message { Type = MessageType.Vote, From = 4, To = 2, Term = 3 });
            Assert.Equal("", joined.FoundingLog);
            Assert.Empty(adopted);

            // Node 1 leads the cluster the node joined.
            var leader = new ClusterCredentials("test", "secret", foundingLog: "bootstrap:cluster");
            await SendAsync(client, leader, new Message { Type = MessageType.Heartbeat, From = 1, To = 2, Term = 2 });
            Assert.Equal("bootstrap:cluster", joined.FoundingLog);
            Assert.Equal(["bootstrap:cluster"], adopted);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    private static async Task SendAsync(Wire.RaftTransport.RaftTransportClient client, ClusterCredentials sender, Message message)
    {
        using var call = client.Send(sender.ToHeaders(from: message.From), DateTime.UtcNow + Patience);
        await call.RequestStream.WriteAsync(RaftMessageCodec.ToWire(message));
        await call.RequestStream.CompleteAsync();
        var summary = await call.ResponseAsync;
        Assert.Equal(1UL, summary.Received);
    }
}
