using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

/// <summary>A read round is confirmed by a quorum, so its heartbeat goes to just enough voters to make one.</summary>
public sealed class ReadRoundTests
{
    [Fact]
    public void AReadRoundAsksAQuorumOfVotersNotEveryFollower()
    {
        var cluster = new TestCluster(5, configure: SlowHeartbeats);
        var leader = cluster.ElectLeader(1);
        Assert.True(leader.Propose("a").Accepted);
        cluster.Stabilize();
        cluster.Delivered.Clear();

        leader.Raft!.ReadIndex(7);
        cluster.Stabilize();

        Assert.Equal([new ReadState(7, leader.Raft.CommitIndex)], leader.ReadStates);
        var asked = cluster.Delivered.Where(m => m.Type == MessageType.Heartbeat && m.Context > 0).Select(m => m.To).Order().ToList();
        Assert.Equal([2UL, 3UL], asked); // two followers and the leader make three of five; ties go to the lower ids
    }

    [Fact]
    public void AChosenVoterThatDoesNotAnswerDelaysReadsByOneTickThenTheOthersAreAsked()
    {
        var cluster = new TestCluster(3, configure: SlowHeartbeats);
        var leader = cluster.ElectLeader(1);
        Assert.True(leader.Propose("a").Accepted);
        cluster.Stabilize();
        leader.Raft!.ReadIndex(1);
        cluster.Stabilize();
        Assert.Single(leader.ReadStates); // confirmed by node 2, which now answered the latest round

        cluster.Isolate(2);
        leader.Raft.ReadIndex(2);
        cluster.Stabilize();
        Assert.DoesNotContain(leader.ReadStates, r => r.Context == 2); // asked node 2 only, which is gone

        cluster.Tick(1, only: 1); // not yet a heartbeat tick: the unconfirmed round makes the leader ask everyone
        Assert.Contains(leader.ReadStates, r => r.Context == 2);

        // Node 3 answered the latest round, so it is asked first from now on, even with node 2 back.
        cluster.Heal();
        cluster.Delivered.Clear();
        leader.Raft.ReadIndex(3);
        cluster.Stabilize();
        Assert.Contains(leader.ReadStates, r => r.Context == 3);
        Assert.Equal([3UL], cluster.Delivered.Where(m => m.Type == MessageType.Heartbeat && m.From == 1).Select(m => m.To));
    }

    // Regular heartbeats every few ticks, so a tick that asks every follower is the read rounds' doing.
    private static void SlowHeartbeats(RaftOptions options)
    {
        options.HeartbeatTicks = 4;
        options.ElectionTicks = 20;
    }
}
