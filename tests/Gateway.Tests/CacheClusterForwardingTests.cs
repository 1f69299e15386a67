using Dcache.Gateway.Cluster;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;
using Grpc.Core;
using static Dcache.Gateway.Tests.CacheClusterBatchTests;

namespace Dcache.Gateway.Tests;

/// <summary>
/// A gateway that cannot reach the leader (its breaker is open) while a follower can sends its writes to the follower
/// asking it to forward them (<c>forward_to_leader</c>); only then. A write answered through a forward does not make
/// the follower the leader, and once the leader answers again its writes go straight to it.
/// </summary>
public sealed class CacheClusterForwardingTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task WritesGoThroughAFollowerOnlyWhileTheLeadersBreakerIsOpenAndDoNotMoveTheLeader()
    {
        var leaderBroken = 0;
        // Status is answered until the gateway has learned the leader, then refused: what the gateway believes later
        // comes from the replies alone. (A single poll was not enough: the first one, 1 s at most, failed at the start of
        // a loaded full run, and the next was 10 minutes away.)
        var statusAnswered = 1;
        NodeStatus StatusUntilLearned(NodeStatus status) =>
            Volatile.Read(ref statusAnswered) == 1 ? status : throw new RpcException(new Status(StatusCode.Unavailable, "status refused in this test"));
        ScriptedNode? leader = null;
        // The leader breaks its command streams at every write while "broken": its breaker opens, its status still answers.
        await using var leaderNode = leader = await ScriptedNode.StartAsync(
            command => Volatile.Read(ref leaderBroken) == 1 ? null : new Reply { Ok = true },
            status: () => StatusUntilLearned(new NodeStatus { NodeId = 1, Role = "Leader", LeaderId = 1, LeaderAddress = leader!.Address }));
        // The follower applies nothing itself: a write it is asked to forward is answered as the leader would; any other
        // names the leader.
        await using var follower = await ScriptedNode.StartAsync(
            command => command.ForwardToLeader
                ? new Reply { Ok = true }
                : new Reply { Failure = new Failure { Kind = FailureKind.NotLeader, LeaderId = 1, LeaderAddress = leader.Address, Message = "not the leader" } },
            status: () => StatusUntilLearned(new NodeStatus { NodeId = 2, Role = "Follower", LeaderId = 1, LeaderAddress = leader.Address }));
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = $"{leader.Address},{follower.Address}",
            AttemptTimeoutMilliseconds = 1000,
            DeadlineMilliseconds = 10_000,
            BreakAfterFailures = 3,
            BreakMilliseconds = 1000,
            StatusPollMilliseconds = 100,
        });
        await WaitForAsync(() => cluster.View.LeaderAddress == leader.Address, "the gateway learned the leader from its status");
        Volatile.Write(ref statusAnswered, 0);
        var statusRequests = leader.StatusRequests + follower.StatusRequests;
        await WaitForAsync(() => leader.StatusRequests + follower.StatusRequests >= statusRequests + 2, "a status poll refused");

        // A healthy leader gets the write itself, unflagged.
        Assert.True((await WriteAsync(cluster, "direct")).Ok);
        Assert.Contains(Received(leader), command => command.Set.Key.ToStringUtf8() == "direct" && !command.ForwardToLeader);

        // The leader's streams break until its breaker opens; from then on writes go through the follower, flagged.
        Volatile.Write(ref leaderBroken, 1);
        var forwarded = 0;
        for (var i = 0; forwarded < 5; i++)
        {
            Assert.True(i < 50, $"only {forwarded} writes answered through the follower after {i} writes");
            var reply = await WriteAsync(cluster, $"cut-{i}");
            Assert.True(reply.Ok, $"write cut-{i}: {reply}");
            if (Received(follower).Any(command => command.Set.Key.ToStringUtf8() == $"cut-{i}" && command.ForwardToLeader))
            {
                forwarded++;
                // Answered by the leader through the follower: the follower did not become the leader.
                Assert.Equal(leader.Address, cluster.View.LeaderAddress);
            }
        }

        // Flagged only when sent to a node other than the leader: never to the leader itself.
        Assert.DoesNotContain(Received(leader), command => command.ForwardToLeader);

        // The leader answers again: once its break is over, writes go straight to it, unflagged, as before.
        Volatile.Write(ref leaderBroken, 0);
        var until = DateTime.UtcNow + Patience;
        for (var i = 0; !Received(leader).Any(command => command.Set.Key.ToStringUtf8() == $"healed-{i - 1}"); i++)
        {
            Assert.True(DateTime.UtcNow < until, $"no write reached the leader again after {i} writes");
            Assert.True((await WriteAsync(cluster, $"healed-{i}")).Ok);
        }

        var followerWrites = Received(follower).Count;
        for (var i = 0; i < 10; i++)
        {
            Assert.True((await WriteAsync(cluster, $"after-{i}")).Ok);
        }

        Assert.Equal(followerWrites, Received(follower).Count);
        Assert.DoesNotContain(Received(leader), command => command.ForwardToLeader);
    }

    private static Task<Reply> WriteAsync(CacheCluster cluster, string key) =>
        cluster.ExecuteAsync(Set(key, session: WriteSessionIds.Next()), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);

    private static List<Command> Received(ScriptedNode node) =>
        [.. node.Received.SelectMany(batch => batch).Where(command => command.OpCase == Command.OpOneofCase.Set)];

    private static Task WaitForAsync(Func<bool> condition, string what) => Eventually.WaitAsync(condition, Patience, what);
}
