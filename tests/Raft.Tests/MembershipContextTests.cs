using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

/// <summary>A member's context (Dcache: its address) travels with its membership change, through the log and snapshots.</summary>
public sealed class MembershipContextTests
{
    [Fact]
    public void AChangeRoundTripsItsContextAndAChangeWrittenBeforeContextsDecodesWithout()
    {
        var change = new ConfChange(ConfChangeType.AddLearner, 7, "http://127.0.0.1:7007");
        Assert.Equal(change, ConfChange.Decode(change.Encode()));

        var legacy = new byte[ConfChange.EncodedLength];
        legacy[0] = (byte)ConfChangeType.AddVoter;
        legacy[1] = 3;
        Assert.Equal(new ConfChange(ConfChangeType.AddVoter, 3), ConfChange.Decode(legacy));
        Assert.Equal(ConfChange.EncodedLength, new ConfChange(ConfChangeType.Remove, 3).Encode().Length);

        Assert.Throws<FormatException>(() => ConfChange.Decode(new byte[4]));
        Assert.Throws<FormatException>(() => ConfChange.Decode(new byte[ConfChange.EncodedLength + ConfChange.MaxContextBytes + 1]));
    }

    [Fact]
    public void AddingSetsTheContextPromotingKeepsItRemovingDropsIt()
    {
        var membership = Membership.Of([1UL], contexts: [KeyValuePair.Create(1UL, "a1")]);
        membership = membership.Apply(new ConfChange(ConfChangeType.AddLearner, 2, "a2"));
        Assert.Equal("a2", membership.ContextOf(2));
        Assert.True(membership.IsLearner(2));

        membership = membership.Apply(new ConfChange(ConfChangeType.PromoteLearner, 2));
        Assert.True(membership.IsVoter(2));
        Assert.Equal("a2", membership.ContextOf(2));

        membership = membership.Apply(new ConfChange(ConfChangeType.Remove, 2));
        Assert.False(membership.Contains(2));
        Assert.Null(membership.ContextOf(2));
        Assert.Equal("a1", membership.ContextOf(1));

        // Memberships that differ only in a context are different configurations.
        Assert.NotEqual(Membership.Of([1UL]), Membership.Of([1UL], contexts: [KeyValuePair.Create(1UL, "a1")]));
        Assert.NotNull(Membership.Of([1UL]).Validate(new ConfChange(ConfChangeType.AddLearner, 2, new string('x', ConfChange.MaxContextBytes + 1))));
    }

    [Fact]
    public void FoundingEntriesCarryTheFoundingAddresses()
    {
        var founding = Membership.Of([1UL, 2UL], [3UL], [KeyValuePair.Create(1UL, "a1"), KeyValuePair.Create(2UL, "a2"), KeyValuePair.Create(3UL, "a3")]);
        var (_, entries) = ClusterBootstrap.InitialLog(founding);
        var replayed = entries.Aggregate(Membership.Empty, (m, e) => m.Apply(ConfChange.Decode(e.Data.Span)));
        Assert.Equal(founding, replayed);
    }

    [Fact]
    public void EveryNodeLearnsAnAddedMembersContextAndANodeRestoredFromASnapshotKeepsIt()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.AddNode(4);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4, "addr-4")).Accepted);
        cluster.Stabilize();
        cluster.Tick(3);
        Assert.All(cluster.Nodes, n => Assert.Equal("addr-4", n.Raft!.Membership.ContextOf(4)));

        // Compact everything behind a snapshot: the context now lives only in the snapshot's membership.
        for (var i = 0; i < 20; i++)
        {
            leader.Propose($"v{i}");
        }

        cluster.Stabilize();
        foreach (var node in cluster.Nodes)
        {
            node.TakeSnapshot();
        }

        cluster[2].Restart();
        Assert.Equal("addr-4", cluster[2].Raft!.Membership.ContextOf(4));

        // A node added now receives the snapshot, and with it every member's context.
        cluster.AddNode(5);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 5, "addr-5")).Accepted);
        cluster.Stabilize();
        cluster.Tick(3);
        Assert.Contains(cluster.Delivered, m => m.Type == MessageType.Snapshot && m.To == 5);
        Assert.Equal("addr-4", cluster[5].Raft!.Membership.ContextOf(4));
        Assert.Equal("addr-5", cluster[5].Raft!.Membership.ContextOf(5));
    }
}
