using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

/// <summary>
/// What may confirm a read round, and what must become of reads when leadership moves (RAFT-NOTES.md, ReadIndex):
/// only acknowledgements of this round or a later one, in this term, from voters of the current configuration; no read
/// before the leader committed an entry of its term; a leader that stops leading fails its pending reads.
/// </summary>
public sealed class ReadIndexSafetyTests
{
    [Fact]
    public void LearnersAnsweringARoundDoNotConfirmIt()
    {
        var cluster = new TestCluster(3, configure: SlowHeartbeats);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        foreach (var learner in new ulong[] { 4, 5 })
        {
            cluster.AddNode(learner);
            Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, learner)).Accepted);
            cluster.Stabilize();
            cluster.Tick(1);
        }

        Assert.Equal([4UL, 5UL], leader.Raft!.Membership.Learners);

        // The voters' answers are lost; the two learners answer every round (with the leader, three of five members).
        cluster.Cut(2, 1);
        cluster.Cut(3, 1);
        leader.Raft.ReadIndex(7);
        cluster.Stabilize();
        cluster.Tick(3, only: 1); // a round still unconfirmed at a tick is sent to every follower, learners included
        var round = LastRound(cluster, 1);
        Assert.Contains(cluster.Delivered, m => m.Type == MessageType.HeartbeatResponse && m.From == 4 && m.Context == round);
        Assert.Contains(cluster.Delivered, m => m.Type == MessageType.HeartbeatResponse && m.From == 5 && m.Context == round);
        Assert.Empty(leader.ReadStates);

        cluster.Heal();
        cluster.Tick(1, only: 1);
        Assert.Equal([7UL], leader.ReadStates.Select(r => r.Context));
    }

    [Fact]
    public void AnAnswerToAnEarlierRoundDoesNotConfirmALaterOne()
    {
        var cluster = new TestCluster(3, configure: SlowHeartbeats);
        var leader = cluster.ElectLeader(1);
        Assert.True(leader.Propose("a").Accepted);
        cluster.Stabilize();
        leader.Raft!.ReadIndex(1);
        cluster.Stabilize();
        Assert.Single(leader.ReadStates);
        var first = LastRound(cluster, 1);

        // The next round's answers are lost; answers to the first round (duplicated, or late) arrive instead.
        cluster.Drop = m => m.Type == MessageType.HeartbeatResponse;
        leader.Raft.ReadIndex(2);
        cluster.Stabilize();
        var second = LastRound(cluster, 1);
        Assert.True(second > first);
        foreach (var follower in new ulong[] { 2, 3 })
        {
            leader.Raft.Step(new Message { Type = MessageType.HeartbeatResponse, From = follower, To = 1, Term = leader.Raft.Term, Context = first });
        }

        cluster.Stabilize();
        Assert.DoesNotContain(leader.ReadStates, r => r.Context == 2);

        leader.Raft.Step(new Message { Type = MessageType.HeartbeatResponse, From = 2, To = 1, Term = leader.Raft.Term, Context = second });
        cluster.Stabilize();
        Assert.Contains(leader.ReadStates, r => r.Context == 2);
    }

    [Fact]
    public void AnAnswerFromAnEarlierTermDoesNotConfirmARound()
    {
        var cluster = new TestCluster(3, configure: SlowHeartbeats);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        var earlierTerm = leader.Raft!.Term;

        // Node 1 leads again two terms later; the round counter went on, so only the term tells old answers apart.
        Assert.True(leader.Raft.TransferLeadership(2));
        cluster.Stabilize();
        Assert.True(cluster[2].Raft!.TransferLeadership(1));
        cluster.Stabilize();
        Assert.Equal(Role.Leader, leader.Raft.Role);
        Assert.Equal(earlierTerm + 2, leader.Raft.Term);
        cluster.Tick(1);

        cluster.Drop = m => m.Type == MessageType.HeartbeatResponse;
        leader.Raft.ReadIndex(9);
        cluster.Stabilize();
        foreach (var follower in new ulong[] { 2, 3 })
        {
            leader.Raft.Step(new Message { Type = MessageType.HeartbeatResponse, From = follower, To = 1, Term = earlierTerm, Context = ulong.MaxValue });
        }

        cluster.Stabilize();
        Assert.Empty(leader.ReadStates);
        Assert.Equal(Role.Leader, leader.Raft.Role);
    }

    [Fact]
    public void ARemovedVotersAnswerDoesNotConfirmARound()
    {
        var cluster = new TestCluster(3, configure: SlowHeartbeats);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 3)).Accepted);
        cluster.Stabilize();
        cluster.Tick(1);
        Assert.Equal([1UL, 2UL], leader.Raft.Membership.Voters);

        // Two voters: node 2's answer is needed. Node 3, removed, answers in the current term (it was a voter then).
        cluster.Drop = m => m.Type == MessageType.HeartbeatResponse && m.From == 2;
        leader.Raft.ReadIndex(5);
        cluster.Stabilize();
        leader.Raft.Step(new Message { Type = MessageType.HeartbeatResponse, From = 3, To = 1, Term = leader.Raft.Term, Context = LastRound(cluster, 1) });
        cluster.Stabilize();
        Assert.Empty(leader.ReadStates);

        cluster.Drop = null;
        cluster.Tick(1, only: 1);
        Assert.Equal([5UL], leader.ReadStates.Select(r => r.Context));
    }

    [Fact]
    public void ANewLeaderAnswersReadsOnlyOnceAnEntryOfItsTermCommitted()
    {
        var cluster = new TestCluster(3, configure: SlowHeartbeats);
        var first = cluster.ElectLeader(1);
        Assert.True(first.Propose("a").Accepted);
        cluster.Stabilize();

        // Node 2 wins the next term, but its Appends (its no-op) are lost: its followers hear only its heartbeats.
        cluster.Drop = m => m.Type == MessageType.Append && m.From == 2;
        Assert.True(first.Raft!.TransferLeadership(2));
        cluster.Stabilize();
        var leader = cluster[2];
        Assert.Equal(Role.Leader, leader.Raft!.Role);
        var noOp = leader.Raft.LastIndex;
        cluster.Tick(4); // a heartbeat: node 3 learns who leads, and answers
        Assert.Equal(2UL, cluster[3].Raft!.Leader);
        Assert.True(leader.Raft.CommitIndex < noOp);

        leader.Raft.ReadIndex(11);
        cluster[3].Raft!.ReadIndex(12);
        cluster.Stabilize();
        cluster.Tick(4); // heartbeats go and are answered: leadership is confirmed, but the commit index may be stale
        Assert.Empty(leader.ReadStates);
        Assert.Empty(cluster[3].ReadStates);

        cluster.Drop = null;
        cluster.Tick(4);
        Assert.True(leader.Raft.CommitIndex >= noOp);
        Assert.Contains(leader.ReadStates, r => r.Context == 11 && r.Index >= noOp);
        Assert.Contains(cluster[3].ReadStates, r => r.Context == 12 && r.Index >= noOp);
    }

    [Fact]
    public void AReadForwardedToALeaderThatLosesLeadershipFailsAtTheFollower()
    {
        var cluster = new TestCluster(3, configure: SlowHeartbeats);
        var leader = cluster.ElectLeader(1);
        Assert.True(leader.Propose("a").Accepted);
        cluster.Stabilize();

        // Node 1 cannot confirm the round (its followers' answers are lost) when node 3 takes over and writes.
        cluster.Drop = m => m.Type == MessageType.HeartbeatResponse && m.To == 1;
        cluster[2].Raft!.ReadIndex(21);
        cluster.Stabilize();
        Assert.Empty(cluster[2].ReadStates);
        Assert.True(leader.Raft!.TransferLeadership(3));
        cluster.Stabilize();
        Assert.Equal(Role.Leader, cluster[3].Raft!.Role);
        Assert.True(cluster[3].Propose("b").Accepted);
        cluster.Stabilize();

        cluster.Drop = null;
        cluster.Tick(4);
        Assert.NotEqual(Role.Leader, leader.Raft.Role);
        Assert.DoesNotContain(cluster[2].ReadStates, r => r.Context == 21);
        Assert.Contains(21UL, cluster[2].DroppedReads);
    }

    [Fact]
    public void AReadAtALeaderHandingOverIsDroppedNotAnsweredWithAnIndexTheNewLeaderHasPassed()
    {
        var cluster = new TestCluster(3, configure: SlowHeartbeats);
        var leader = cluster.ElectLeader(1);
        Assert.True(leader.Propose("a").Accepted);
        cluster.Stabilize();

        // The read's round goes out after the TimeoutNow: node 2 gets it in its new term.
        Assert.True(leader.Raft!.TransferLeadership(2));
        leader.Raft.ReadIndex(31);
        cluster.Stabilize();
        Assert.Equal(Role.Leader, cluster[2].Raft!.Role);
        var written = cluster[2].Propose("b");
        Assert.True(written.Accepted);
        cluster.Stabilize();
        cluster.Tick(4);

        Assert.DoesNotContain(leader.ReadStates, r => r.Context == 31 && r.Index < written.Index);
        Assert.Contains(31UL, leader.DroppedReads);
    }

    [Fact]
    public void AFollowersReadIndexIsTheLeadersCommitIndexNotItsOwn()
    {
        var cluster = new TestCluster(3, configure: SlowHeartbeats);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);

        // Node 3 stops receiving the log and the commit index; its read request and the answer get through.
        cluster.Drop = m => m.To == 3 && m.Type is MessageType.Append or MessageType.Heartbeat;
        Assert.True(leader.Propose("a").Accepted);
        cluster.Stabilize();
        var commit = leader.Raft!.CommitIndex;
        Assert.True(cluster[3].Raft!.CommitIndex < commit);

        cluster[3].Raft!.ReadIndex(41);
        cluster.Stabilize();
        Assert.Equal([new ReadState(41, commit)], cluster[3].ReadStates);
        Assert.True(cluster[3].Raft!.AppliedIndex < commit); // so its host must wait for its own apply to get there
    }

    /// <summary>The latest read round <paramref name="leader"/> announced in a heartbeat that was delivered.</summary>
    private static ulong LastRound(TestCluster cluster, ulong leader) =>
        cluster.Delivered.Where(m => m.Type == MessageType.Heartbeat && m.From == leader).Max(m => m.Context);

    // Regular heartbeats every few ticks and elections far off, so a test's ticks do not depose anyone.
    private static void SlowHeartbeats(RaftOptions options)
    {
        options.HeartbeatTicks = 4;
        options.ElectionTicks = 20;
    }
}
