using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

/// <summary>
/// Which of a leader's messages may leave before its own write of the Ready is durable
/// (<see cref="Ready.MessagesBeforePersistence"/>): appends whose commit index is already durable there, nothing else.
/// </summary>
public sealed class EarlyAppendTests
{
    [Fact]
    public void ThreeVotersLeaderSendsNewEntriesBeforeItsOwnWrite()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Stabilize();

        Assert.True(leader.Propose("x").Accepted);
        var ready = leader.Raft!.GetReady();

        Assert.Single(ready.Entries);
        var index = ready.Entries[0].Index;
        Assert.Equal(2, ready.MessagesBeforePersistence.Count);
        Assert.All(ready.MessagesBeforePersistence, m =>
        {
            Assert.Equal(MessageType.Append, m.Type);
            Assert.Equal(index, Assert.Single(m.Entries).Index);
            Assert.True(m.Commit < index);
        });
        Assert.Empty(ready.Messages);
        leader.Storage.Save(ready.HardState, ready.Entries, ready.Snapshot);
        leader.Raft.Advance(ready);
    }

    [Fact]
    public void FollowerAcknowledgementsWaitForItsWrite()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Stabilize();
        Assert.True(leader.Propose("x").Accepted);
        leader.ProcessReady();

        var follower = cluster[2];
        cluster.DeliverPending();
        var ready = follower.Raft!.GetReady();

        Assert.NotEmpty(ready.Entries);
        Assert.Empty(ready.MessagesBeforePersistence);
        Assert.Contains(ready.Messages, m => m.Type == MessageType.AppendResponse);
    }

    [Fact]
    public void SingleVoterKeepsAppendsToItsLearnerUntilItsWriteIsDurable()
    {
        // A single voter commits what it appends at once: an append to its learner carries that commit, which the
        // learner would apply before the leader's own disk holds the entry.
        var cluster = new TestCluster(1);
        var leader = cluster.ElectLeader(1);
        cluster.Stabilize();
        cluster.AddNode(2);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 2)).Accepted);
        cluster.Stabilize();
        cluster.Tick(3);
        cluster.Stabilize();
        Assert.True(cluster[2].Raft!.Membership.IsLearner(2));

        Assert.True(leader.Propose("x").Accepted);
        var ready = leader.Raft.GetReady();

        var index = Assert.Single(ready.Entries).Index;
        Assert.Equal(index, leader.Raft.CommitIndex);
        Assert.Empty(ready.MessagesBeforePersistence);
        var append = Assert.Single(ready.Messages, m => m.Type == MessageType.Append && m.To == 2);
        Assert.Equal(index, append.Commit);
        leader.Storage.Save(ready.HardState, ready.Entries, ready.Snapshot);
        leader.Raft.Advance(ready);
    }
}
