using System.Collections.Concurrent;
using Dcache.Node.Tests.Transport;
using Dcache.Node.Transport;
using Dcache.Raft;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A leader's answer to a follower's read-index request carries the leader's time when it answered: the follower judges
/// the read's expiries by it, not by its own estimate of the cluster's time (see LeaderTimeReadTests for the follower's
/// side). Without it, a key the leader has just seen expire can still be served by the follower, or the other way round.
/// </summary>
public sealed class ReadIndexAnswerTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_leaders_answer_to_a_followers_read_index_request_carries_the_leaders_time()
    {
        var follower = new RecordingInbox(2);
        await using var server = await GrpcTestServer.StartRaftTransportAsync(follower, new ClusterCredentials("test", "secret"));
        try
        {
            await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = $"http://127.0.0.1:{GrpcTestServer.PortOf(server)}" }, sendToPeers: true);
            var noOp = await node.LeadAsync(term: 2, voter: 2);
            Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 2, To = 1, Term = 2, Index = noOp }, 0));
            await DriverWaits.UntilAsync(node.Driver, raft => raft.AppliedIndex == noOp, "the no-op of term 2 did not apply");
            var before = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

            // Node 2 asks; the leader confirms its leadership with a round of heartbeats, which node 2 acknowledges.
            Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.ReadIndex, From = 2, To = 1, Term = 2, Context = 77 }, 0));
            await Eventually.WaitAsync(() => follower.Received.Any(m => m.Message.Type == MessageType.Heartbeat && m.Message.Context != 0), Patience, "no heartbeat round confirmed the read");
            var round = follower.Received.First(m => m.Message.Type == MessageType.Heartbeat && m.Message.Context != 0).Message.Context;
            Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.HeartbeatResponse, From = 2, To = 1, Term = 2, Context = round }, 0));

            await Eventually.WaitAsync(() => follower.Received.Any(m => m.Message.Type == MessageType.ReadIndexResponse), Patience, "the read index was never answered");
            var (answer, readTimeMs) = follower.Received.First(m => m.Message.Type == MessageType.ReadIndexResponse);
            Assert.Equal((77UL, false), (answer.Context, answer.Reject));
            Assert.True(readTimeMs >= before, $"the answer carried the leader's time {readTimeMs}, not a time at or after {before}");
        }
        finally
        {
            await server.StopAsync();
        }
    }

    /// <summary>Node <paramref name="nodeId"/> that records every message it is handed, with the read time it carried.</summary>
    private sealed class RecordingInbox(ulong nodeId) : IRaftInbox
    {
        public ConcurrentQueue<(Message Message, long ReadTimeMs)> Received { get; } = new();

        public ulong NodeId => nodeId;

        public CancellationToken Closing => CancellationToken.None;

        public bool WasRemoved(ulong peer) => false;

        public void PeerAddressHeard(ulong peer, string address)
        {
        }

        public void PeerEntryFormatHeard(ulong peer, byte format)
        {
        }

        public void PeerClockHeard(ulong peer, long readingMs, long echoMs, long echoHeldMs, long? clusterOffsetMs)
        {
        }

        public bool TryPost(Message message, long readTimeMs = 0)
        {
            Received.Enqueue((message, readTimeMs));
            return true;
        }

        public IIncomingSnapshot BeginSnapshot(ulong peer, Message message) => throw new NotSupportedException();
    }
}
