using System.Net;
using System.Net.Sockets;
using Dcache.Gateway.Tests.Support;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Protocol.Cache;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A follower given a write the gateway asked it to forward (<c>forward_to_leader</c>) sends it to its leader, once, and
/// answers with the leader's reply; or, when the forward surely never reached the leader, Unavailable, and when it may
/// have, an unknown outcome. A write without the flag is answered NotLeader, as it always was: so a forwarded write
/// (which arrives without it) reaching a node that no longer leads goes no further.
/// </summary>
public sealed class ForwardingTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task AFlaggedWriteIsForwardedOnceWithItsSessionAndTheLeadersReplyComesBackAsItIs()
    {
        await using var leader = await ScriptedNode.StartAsync(_ => new Reply { Integer = 42 });
        await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = leader.Address });
        await node.FollowAsync(leader: 2, term: 1);

        var reply = await node.Driver.ExecuteAsync(Incr(id: 17, forward: true)).WaitAsync(Patience);

        Assert.Equal(new Reply { Id = 17, Integer = 42 }, reply);
        var forwarded = Assert.Single(leader.Received.SelectMany(batch => batch));
        Assert.False(forwarded.ForwardToLeader); // one hop: the leader would answer NotLeader, never forward again
        Assert.Equal((17UL, 7UL, 3UL, true), (forwarded.Id, forwarded.ClientId, forwarded.Sequence, forwarded.SessionMustExist));
        var headers = Assert.Single(leader.UnaryHeaders);
        Assert.Equal(("test", "secret"), (headers.GetValue("dcache-cluster-id"), headers.GetValue("dcache-secret")));
    }

    [Fact]
    public async Task ALeadersNotLeaderReplyToAForwardedWriteGoesBackWithItsHint()
    {
        await using var leader = await ScriptedNode.StartAsync(_ => new Reply
        {
            Failure = new Failure { Kind = FailureKind.NotLeader, LeaderId = 3, LeaderAddress = "http://127.0.0.1:9", Message = "not applied: node 3 leads" },
        });
        await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = leader.Address });
        await node.FollowAsync(leader: 2, term: 1);

        var reply = await node.Driver.ExecuteAsync(Incr(id: 5, forward: true)).WaitAsync(Patience);

        Assert.Equal(FailureKind.NotLeader, reply.Failure.Kind);
        Assert.Equal((5UL, 3UL, "http://127.0.0.1:9"), (reply.Id, reply.Failure.LeaderId, reply.Failure.LeaderAddress));
    }

    [Fact]
    public async Task AWriteWithoutTheFlagIsAnsweredNotLeaderAndNotForwarded()
    {
        await using var leader = await ScriptedNode.StartAsync(_ => new Reply { Integer = 42 });
        await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = leader.Address });
        await node.FollowAsync(leader: 2, term: 1);

        var reply = await node.Driver.ExecuteAsync(Incr(id: 9, forward: false)).WaitAsync(Patience);

        Assert.Equal(FailureKind.NotLeader, reply.Failure.Kind);
        Assert.Equal((2UL, leader.Address), (reply.Failure.LeaderId, reply.Failure.LeaderAddress));
        Assert.Empty(leader.Received);
    }

    [Fact]
    public async Task AForwardToALeaderAddressNobodyListensOnIsUnavailable()
    {
        await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = $"http://127.0.0.1:{ClosedPort()}" });
        await node.FollowAsync(leader: 2, term: 1);

        var reply = await node.Driver.ExecuteAsync(Incr(id: 11, forward: true)).WaitAsync(Patience);

        Assert.True(reply.Failure is { Kind: FailureKind.Unavailable }, $"reply: {reply}");
        Assert.Equal(11UL, reply.Id);
        Assert.Contains("could not be forwarded to the leader, node 2", reply.Failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AForwardThatSurelyNeverReachedTheLeaderIsCountedAsUnavailableForOperators()
    {
        // dcache.node.forwarded_writes by outcome: "unavailable" (surely not applied) and "outcome_unknown" call for
        // different checks by an operator. Other tests' nodes may count too; none of them forwards to a closed port.
        var outcomes = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == NodeMetrics.MeterName && instrument.Name == "dcache.node.forwarded_writes")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "outcome")
                {
                    outcomes.Enqueue((string)tag.Value!);
                }
            }
        });
        listener.Start();
        await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = $"http://127.0.0.1:{ClosedPort()}" });
        await node.FollowAsync(leader: 2, term: 1);

        var reply = await node.Driver.ExecuteAsync(Incr(id: 23, forward: true)).WaitAsync(Patience);

        Assert.True(reply.Failure is { Kind: FailureKind.Unavailable }, $"reply: {reply}");
        Assert.Contains("unavailable", outcomes);
    }

    [Fact]
    public async Task AForwardTheLeaderLeavesUnansweredEndsAtTheWritesDeadlineWithAnUnknownOutcome()
    {
        await using var leader = await ScriptedNode.StartAsync(_ => ScriptedNode.Unanswered);
        await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = leader.Address }, requestTimeout: TimeSpan.FromMilliseconds(500));
        await node.FollowAsync(leader: 2, term: 1);

        var reply = await node.Driver.ExecuteAsync(Incr(id: 13, forward: true)).WaitAsync(Patience);

        Assert.True(reply.Failure is { Kind: FailureKind.OutcomeUnknown }, $"reply: {reply}");
        Assert.Equal(13UL, reply.Id);
        Assert.Contains("forwarded to the leader, node 2, and may or may not have applied", reply.Failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AForwardTheLeaderTookAndFailedAsUnavailableLeavesTheOutcomeUnknown()
    {
        // The call reached the leader, which failed it UNAVAILABLE itself (as a leader stopping mid-call does): it may have
        // proposed the write first. Only a connection that could not be opened means the write surely did not apply.
        await using var leader = await ScriptedNode.StartAsync(_ => null);
        await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = leader.Address });
        await node.FollowAsync(leader: 2, term: 1);

        var reply = await node.Driver.ExecuteAsync(Incr(id: 21, forward: true)).WaitAsync(Patience);

        Assert.True(reply.Failure is { Kind: FailureKind.OutcomeUnknown }, $"reply: {reply}");
        Assert.Equal(21UL, reply.Id);
        Assert.Single(leader.Received);
    }

    [Fact]
    public async Task AFlaggedWriteOnAFollowerThatKnowsNoLeaderIsUnavailableAsBefore()
    {
        await using var leader = await ScriptedNode.StartAsync(_ => new Reply { Integer = 42 });
        await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = leader.Address });

        var reply = await node.Driver.ExecuteAsync(Incr(id: 15, forward: true)).WaitAsync(Patience);

        Assert.True(reply.Failure is { Kind: FailureKind.Unavailable }, $"reply: {reply}");
        Assert.Empty(leader.Received);
    }

    [Fact]
    public async Task AFlaggedWriteOnAFollowerThatKnowsNoAddressForItsLeaderIsUnavailable()
    {
        // Answered NotLeader without an address, the gateway would come straight back (a named leader gets no backoff).
        await using var node = PeerlessNode.Start();
        await node.FollowAsync(leader: 2, term: 1);

        var reply = await node.Driver.ExecuteAsync(Incr(id: 17, forward: true)).WaitAsync(Patience);

        Assert.True(reply.Failure is { Kind: FailureKind.Unavailable }, $"reply: {reply}");
        Assert.Contains("knows no address for it", reply.Failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AForwardAfterTheForwarderStoppedIsAnsweredUnavailableNotLeftUnanswered()
    {
        await using var leader = await ScriptedNode.StartAsync(_ => new Reply { Integer = 42 });
        var metrics = new NodeMetrics();
        var forwarder = new LeaderForwarder(new ClusterCredentials("test", "secret"), 1 << 20, metrics, NullLogger<LeaderForwarder>.Instance);
        try
        {
            await forwarder.DisposeAsync();
            var replies = new TaskReplySink();

            forwarder.Forward(Incr(id: 19, forward: true), 2, leader.Address, TimeSpan.FromSeconds(10), replies);

            var reply = await replies.Task.WaitAsync(Patience);
            Assert.True(reply.Failure is { Kind: FailureKind.Unavailable }, $"reply: {reply}");
            Assert.Empty(leader.Received);
        }
        finally
        {
            metrics.Dispose();
        }
    }

    private static Command Incr(ulong id, bool forward) => new()
    {
        Id = id,
        ClientId = 7,
        Sequence = 3,
        SessionMustExist = true,
        ForwardToLeader = forward,
        IncrBy = new IncrByRequest { Key = ByteString.CopyFromUtf8("counter"), Delta = 1 },
    };

    /// <summary>A loopback port nothing listens on (it was free a moment ago: a connection to it is refused).</summary>
    private static int ClosedPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
