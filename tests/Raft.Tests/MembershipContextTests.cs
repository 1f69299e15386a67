using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

/// <summary>
/// A member's context (Dcache: its address) travels with its membership change, through the log and snapshots; an
/// UpdateContext change sets an existing member's context and changes no voter or learner set.
/// </summary>
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

    /// <summary>
    /// Review 30: a configuration already past the size bounds (founded by an older build) could no longer promote a
    /// learner or shorten an address; only a change that makes it larger past them is refused.
    /// </summary>
    [Fact]
    public void AConfigurationPastTheSizeBoundsMayPromoteShrinkOrRemoveButNotGrow()
    {
        var address = "http://" + new string('a', 780) + ":7001";
        var past = Membership.Of([1UL, 2UL], learners: [3UL], contexts: [.. new ulong[] { 1, 2, 3 }.Select(id => KeyValuePair.Create(id, address))]);
        Assert.True(past.Contexts.Values.Sum(context => context.Length) > Membership.MaxContextsBytes);

        Assert.Null(past.Validate(new ConfChange(ConfChangeType.PromoteLearner, 3)));
        Assert.Null(past.Validate(new ConfChange(ConfChangeType.UpdateContext, 2, "http://10.0.0.2:7001")));
        Assert.Null(past.Validate(new ConfChange(ConfChangeType.Remove, 3)));
        Assert.StartsWith("the members' contexts are limited", past.Validate(new ConfChange(ConfChangeType.AddLearner, 4, "http://10.0.0.4:7001")), StringComparison.Ordinal);
        Assert.StartsWith("the members' contexts are limited", past.Validate(new ConfChange(ConfChangeType.UpdateContext, 2, address + "0")), StringComparison.Ordinal);
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
        CompactEverything(cluster, leader);

        cluster[2].Restart();
        Assert.Equal("addr-4", cluster[2].Raft!.Membership.ContextOf(4));

        // A node added now receives the snapshot, and with it every member's context.
        AddLearnerThatCatchesUpBySnapshot(cluster, leader, 5, "addr-5");
        Assert.Equal("addr-4", cluster[5].Raft!.Membership.ContextOf(4));
        Assert.Equal("addr-5", cluster[5].Raft!.Membership.ContextOf(5));
    }

    [Fact]
    public void AnUpdateRoundTripsAndATypeThisBuildDoesNotKnowIsRefusedWhenDecoded()
    {
        var update = new ConfChange(ConfChangeType.UpdateContext, 3, "http://127.0.0.1:7103");
        Assert.Equal(update, ConfChange.Decode(update.Encode()));

        // A newer build's change must stop this node, not be applied as something else (or skipped).
        var unknown = new ConfChange(ConfChangeType.AddVoter, 3).Encode();
        unknown[0] = (byte)ConfChangeType.UpdateContext + 1;
        var error = Assert.Throws<FormatException>(() => ConfChange.Decode(unknown));
        Assert.Contains("upgrade this node", error.Message, StringComparison.Ordinal);
        unknown[0] = 0;
        Assert.Throws<FormatException>(() => ConfChange.Decode(unknown));
    }

    [Fact]
    public void AnUpdateSetsTheContextOfAnExistingMemberAndChangesNoSet()
    {
        var membership = Membership.Of([1UL, 2UL], [3UL], [KeyValuePair.Create(1UL, "a1"), KeyValuePair.Create(2UL, "a2"), KeyValuePair.Create(3UL, "a3")]);
        var updated = membership.Apply(new ConfChange(ConfChangeType.UpdateContext, 2, "b2"));
        Assert.Equal(membership.Voters, updated.Voters);
        Assert.Equal(membership.Learners, updated.Learners);
        Assert.Equal("b2", updated.ContextOf(2));
        Assert.Equal("a1", updated.ContextOf(1));
        Assert.Equal([2UL], updated.UpdatedContexts);
        Assert.NotEqual(membership, updated);

        // Updating a learner keeps it a learner; promoting keeps what the update set.
        updated = updated.Apply(new ConfChange(ConfChangeType.UpdateContext, 3, "b3")).Apply(new ConfChange(ConfChangeType.PromoteLearner, 3));
        Assert.True(updated.IsVoter(3));
        Assert.Equal("b3", updated.ContextOf(3));
        Assert.Equal([2UL, 3UL], updated.UpdatedContexts);

        // Removed and added back, a member's context is the one its addition carried, not an update.
        updated = updated.Apply(new ConfChange(ConfChangeType.Remove, 3));
        Assert.Equal([2UL], updated.UpdatedContexts);
        updated = updated.Apply(new ConfChange(ConfChangeType.AddLearner, 3, "c3"));
        Assert.Equal("c3", updated.ContextOf(3));
        Assert.Equal([2UL], updated.UpdatedContexts);
    }

    [Fact]
    public void AnUpdateIsRefusedForANonMemberWithoutAContextOrWithAnOversizedOne()
    {
        var membership = Membership.Of([1UL, 2UL], contexts: [KeyValuePair.Create(1UL, "a1"), KeyValuePair.Create(2UL, "a2")]);
        Assert.Null(membership.Validate(new ConfChange(ConfChangeType.UpdateContext, 2, "b2")));
        Assert.Equal("node 9 is not a member", membership.Validate(new ConfChange(ConfChangeType.UpdateContext, 9, "b9")));
        Assert.Equal("updating node 2 needs a context to set", membership.Validate(new ConfChange(ConfChangeType.UpdateContext, 2)));
        Assert.Equal("updating node 2 needs a context to set", membership.Validate(new ConfChange(ConfChangeType.UpdateContext, 2, "")));
        Assert.NotNull(membership.Validate(new ConfChange(ConfChangeType.UpdateContext, 2, new string('x', ConfChange.MaxContextBytes + 1))));
        Assert.NotNull(membership.Validate(new ConfChange(ConfChangeType.UpdateContext, 0, "b0")));
    }

    [Fact]
    public void AnUpdateGoesThroughTheLogOneChangeAtATimeAndSurvivesSnapshotsAndRestarts()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        var votersBefore = leader.Raft!.Membership.Voters;

        // Not in effect anywhere until applied, and no other change may be proposed meanwhile.
        cluster.Isolate(2);
        cluster.Isolate(3);
        var proposed = leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.UpdateContext, 3, "moved-3"));
        Assert.True(proposed.Accepted);
        Assert.Null(leader.Raft!.Membership.ContextOf(3));
        Assert.Equal(ProposeStatus.ConfChangePending, leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.UpdateContext, 2, "moved-2")).Status);
        Assert.Equal(ProposeStatus.ConfChangePending, leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Status);
        cluster.Heal();
        cluster.Stabilize();
        cluster.Tick(3);
        Assert.All(cluster.Nodes, n =>
        {
            Assert.Equal("moved-3", n.Raft!.Membership.ContextOf(3));
            Assert.Equal([3UL], n.Raft!.Membership.UpdatedContexts);
            Assert.Equal(votersBefore, n.Raft!.Membership.Voters);
        });
        Assert.Equal(ProposeStatus.Accepted, leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.UpdateContext, 2, "moved-2")).Status);
        cluster.Stabilize();
        cluster.Tick(3);

        // Replayed from the log on restart, then carried by a snapshot once the log is compacted.
        cluster[2].Restart();
        Assert.Equal("moved-3", cluster[2].Raft!.Membership.ContextOf(3));
        Assert.Equal([2UL, 3UL], cluster[2].Raft!.Membership.UpdatedContexts);
        CompactEverything(cluster, leader);
        cluster[3].Restart();
        Assert.Equal("moved-2", cluster[3].Raft!.Membership.ContextOf(2));
        Assert.Equal([2UL, 3UL], cluster[3].Raft!.Membership.UpdatedContexts);
        AddLearnerThatCatchesUpBySnapshot(cluster, leader, 4, "addr-4");
        Assert.Equal("moved-3", cluster[4].Raft!.Membership.ContextOf(3));
        Assert.Equal(leader.Raft!.Membership, cluster[4].Raft!.Membership);
    }

    /// <summary>Writes a little more, then has every node snapshot and compact its whole log.</summary>
    private static void CompactEverything(TestCluster cluster, TestNode leader)
    {
        for (var i = 0; i < 20; i++)
        {
            leader.Propose($"v{i}");
        }

        cluster.Stabilize();
        foreach (var node in cluster.Nodes)
        {
            node.TakeSnapshot();
        }
    }

    /// <summary>Adds node <paramref name="id"/> as a learner after the log was compacted: it catches up from the leader's snapshot.</summary>
    private static void AddLearnerThatCatchesUpBySnapshot(TestCluster cluster, TestNode leader, ulong id, string context)
    {
        cluster.AddNode(id);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, id, context)).Accepted);
        cluster.Stabilize();
        cluster.Tick(3);
        Assert.Contains(cluster.Delivered, m => m.Type == MessageType.Snapshot && m.To == id);
    }
}
