using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

public sealed class BasicTests
{
    [Fact]
    public void SingleNodeElectsItselfAndCommits()
    {
        var cluster = new TestCluster(1);
        cluster.TickUntil(() => cluster[1].Raft!.Role == Role.Leader, 50);
        var result = cluster[1].Propose("a");
        Assert.True(result.Accepted);
        cluster.Stabilize();
        Assert.Equal(["a"], cluster[1].Applied);
    }

    [Fact]
    public void ThreeNodesElectOneLeaderAndReplicate()
    {
        var cluster = new TestCluster(3);
        cluster.TickUntil(() => cluster.Leader() is not null, 100);
        var leader = cluster.Leader()!;
        for (var i = 0; i < 10; i++)
        {
            Assert.True(leader.Propose($"v{i}").Accepted);
        }

        cluster.Stabilize();
        cluster.Tick(2);
        foreach (var node in cluster.Nodes)
        {
            Assert.Equal(Enumerable.Range(0, 10).Select(i => $"v{i}"), node.Applied);
        }

        Assert.Single(cluster.Nodes, n => n.Raft!.Role == Role.Leader);
    }

    [Fact]
    public void FollowerRefusesProposalWithLeaderHint()
    {
        var cluster = new TestCluster(3);
        cluster.ElectLeader(1);
        cluster.Tick(1);
        var result = cluster[2].Propose("x");
        Assert.Equal(ProposeStatus.NotLeader, result.Status);
        Assert.Equal(1UL, result.LeaderHint);
    }
}
