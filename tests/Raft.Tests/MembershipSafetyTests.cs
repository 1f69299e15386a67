using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

/// <summary>
/// Single-server membership changes, which take effect when their entry is applied (as in etcd): the rules around
/// them (a new leader's own no-op first, one change at a time, what an uncommitted change means, a leader removing
/// itself, removed nodes, reads and transfers during a change, restarts and snapshots).
/// </summary>
public sealed class MembershipSafetyTests
{
    [Fact]
    public void ARemovedLeadersSuccessorTakesOverAtOnceEvenWhenItStepsTheHandoverBeforeApplyingTheRemoval()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        var term = leader.Raft!.Term;
        Assert.True(leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 1)).Accepted);

        leader.ProcessReady(); // the Append carrying the removal
        cluster.DeliverPending();
        cluster[2].ProcessReady();
        cluster[3].ProcessReady(); // both acknowledge it
        cluster.DeliverPending(); // the leader commits the removal
        leader.ProcessReady(); // sends the new commit index, applies the removal: steps down, hands over
        Assert.Equal(Role.Follower, leader.Raft.Role);
        leader.ProcessReady(); // sends TimeoutNow

        // A host's loop steps everything it drained before it handles the next Ready: the successor gets the commit
        // index and the TimeoutNow before it has applied the removal.
        cluster.DeliverPending();
        cluster.Stabilize();

        // No tick has passed: only the handover can have made a leader.
        var successor = cluster.Leader();
        Assert.NotNull(successor);
        Assert.Equal(term + 1, successor.Raft!.Term);
        Assert.Equal([2UL, 3UL], successor.Raft.Membership.Voters);
        Assert.True(successor.Propose("after").Accepted);
        cluster.Stabilize();
        Assert.Contains("after", cluster[2].Applied);
        Assert.Contains("after", cluster[3].Applied);
    }

    [Fact]
    public void ARemovedLeaderLeadingOnUntilItsSuccessorCatchesUpDoesNotCountItselfTowardsACommit()
    {
        // Five voters; node 1 removes itself and proposes "x" right after. Nodes 4 and 5 are cut off. Once the removal
        // has applied, "x" reaches nodes 3 and 2: three copies with node 1's, a majority of the five, but only two of
        // the four voters left, so not committed. Counted as committed, it could be lost: 2, 3 and 4 (or 5) are enough
        // to elect a leader without it.
        var cluster = new TestCluster(5);
        var leader = cluster.ElectLeader(1);
        cluster.Stabilize();
        cluster.Isolate(4);
        cluster.Isolate(5);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 1)).Accepted);
        leader.ProcessReady(); // the Append carrying the removal, to 2 and 3
        cluster.DeliverPending();
        var x = leader.Propose("x");
        Assert.True(x.Accepted);

        cluster.Cut(1, 2);
        cluster.Cut(1, 3);
        cluster.Stabilize(); // the removal commits and applies; the Appends carrying "x" are lost
        Assert.Equal(Role.Leader, leader.Raft.Role);
        Assert.False(leader.Raft.Membership.IsVoter(1));
        Assert.True(leader.Raft.CommitIndex < x.Index);

        void ReachOnly(ulong follower)
        {
            cluster.Heal();
            foreach (var cut in new ulong[] { 2, 3 }.Where(id => id != follower))
            {
                cluster.Cut(1, cut);
            }

            cluster.Isolate(4);
            cluster.Isolate(5);
            cluster.Tick(1, only: 1); // a heartbeat, answered: the leader resends what the follower lacks
        }

        ReachOnly(3);
        ReachOnly(2);
        cluster.Stabilize();

        Assert.True(cluster[2].Raft!.LastIndex >= x.Index && cluster[3].Raft!.LastIndex >= x.Index, "x did not reach nodes 2 and 3");
        Assert.All(cluster.Nodes, n => Assert.True(n.Raft!.CommitIndex < x.Index, $"node {n.Id} counts x as committed"));
    }

    [Fact]
    public void ALeaderRemovingItselfFromTwoVotersCatchesTheOtherUpBeforeSteppingDownSoItCanLeadAlone()
    {
        var cluster = new TestCluster(2);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        var removal = leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 1));
        Assert.True(removal.Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        Assert.True(leader.Propose("w").Accepted); // appended after the removal: node 2 will lack it when the removal applies
        cluster[2].ProcessReady();
        cluster.DeliverPending(); // node 2 acknowledged the removal only; the leader commits it

        // The Append that tells node 2 the removal committed is lost (only that one).
        var lost = false;
        cluster.Drop = m =>
        {
            if (!lost && m is { From: 1, To: 2, Type: MessageType.Append or MessageType.Heartbeat } && m.Commit >= removal.Index)
            {
                lost = true;
                return true;
            }

            return false;
        };
        cluster.Stabilize();
        Assert.True(lost);
        Assert.NotEqual(Role.Leader, leader.Raft.Role);

        // The removed node is stopped, as an operator does once its removal is applied. Node 2 must be able to lead
        // alone: it may not campaign under the old configuration {1, 2}, which needs node 1's vote.
        leader.Crash();
        cluster.TickUntil(() => cluster[2].Raft!.Role == Role.Leader, 100);
        Assert.Equal([2UL], cluster[2].Raft!.Membership.Voters);
        Assert.True(cluster[2].Propose("alone").Accepted);
        cluster.Stabilize();
        Assert.Equal(["w", "alone"], cluster[2].Applied);
    }

    [Fact]
    public void TheLastVoterLearnsItsPeersRemovalCommittedFromTheRemovedNodesRefusalToVoteForIt()
    {
        var cluster = new TestCluster(2);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        var removal = leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 1));
        Assert.True(removal.Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        Assert.True(leader.Propose("w").Accepted); // node 1's log will be longer than node 2's
        cluster[2].ProcessReady();
        cluster.DeliverPending(); // node 2 acknowledged the removal only; the leader commits it

        // Node 2 is cut off before it hears of the commit, and the removed leader crashes during its handover: it comes
        // back a non-voter that knows the removal committed, with a longer log than node 2's.
        cluster.Isolate(2);
        cluster.Stabilize();
        Assert.Equal(removal.Index, cluster[1].Storage.HardState.Commit);
        leader.Restart();
        Assert.False(leader.Raft!.Membership.IsVoter(1));
        cluster.Heal();

        // Node 2 still counts node 1 as a voter, and node 1 refuses its vote (node 2's log is shorter): without more,
        // neither ever leads. The refusal tells node 2 that the removal committed; then it leads alone.
        cluster.TickUntil(() => cluster[2].Raft!.Role == Role.Leader, 200);
        Assert.Equal([2UL], cluster[2].Raft!.Membership.Voters);
        Assert.True(cluster[2].Propose("alone").Accepted);
        cluster.Stabilize();
        Assert.Contains("alone", cluster[2].Applied);
    }

    [Fact]
    public void ACandidateThatAppliesAChangeMidElectionStartsOverUnderTheNewConfiguration()
    {
        var cluster = new TestCluster(4);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 4)).Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        foreach (var id in new ulong[] { 2, 3, 4 })
        {
            cluster[id].ProcessReady();
        }

        cluster.DeliverPending(); // committed on the leader; nobody else hears of the commit
        cluster.Cut(1, 2);
        cluster.Cut(1, 3);
        cluster.Cut(1, 4);
        leader.ProcessReady();
        Assert.False(leader.Raft.Membership.Contains(4));
        Assert.True(leader.Propose("w").Accepted); // the leader's log is now longer than the others'
        cluster.Stabilize();
        cluster.Heal();

        // Node 4, still a voter as far as it knows, is told to campaign (a transfer that raced with its removal).
        var term = leader.Raft.Term;
        cluster[4].Raft!.Step(new Message { Type = MessageType.TimeoutNow, From = 1, To = 4, Term = term });
        Assert.Equal(Role.Candidate, cluster[4].Raft!.Role);
        cluster[4].ProcessReady();
        cluster.DeliverPending(); // the vote requests

        // Node 1 refuses (its log is longer), and its refusal says the removal committed; node 4 applies it...
        cluster[1].ProcessReady();
        cluster.DeliverPending();
        cluster[4].ProcessReady();
        Assert.False(cluster[4].Raft!.Membership.Contains(4));
        Assert.NotEqual(Role.Candidate, cluster[4].Raft!.Role);

        // ...so the votes nodes 2 and 3 granted under the old configuration no longer make it a leader.
        cluster[2].ProcessReady();
        cluster[3].ProcessReady();
        cluster.DeliverPending();
        Assert.NotEqual(Role.Leader, cluster[4].Raft!.Role);
        cluster.TickUntil(() => cluster.Leader() is { } l && l.Id != 4 && l.Raft!.Term > term, 100);
        cluster.Tick(5);
        Assert.NotEqual(Role.Leader, cluster[4].Raft!.Role);
        Assert.All(new ulong[] { 1, 2, 3 }, id => Assert.Equal([1UL, 2UL, 3UL], cluster[id].Raft!.Membership.Voters));
    }

    [Fact]
    public void TheHandoverOfARemovedLeaderCarriesTheCommitThatRemovedIt()
    {
        var cluster = new TestCluster(2);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        var removal = leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 1));
        Assert.True(removal.Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        cluster[2].ProcessReady();
        cluster.DeliverPending(); // committed on the leader

        // The Append announcing the commit is lost; the TimeoutNow that follows it arrives; then the removed node stops.
        cluster.Drop = m => m is { From: 1, Type: MessageType.Append or MessageType.Heartbeat };
        leader.ProcessReady(); // applies the removal, hands over
        Assert.NotEqual(Role.Leader, leader.Raft.Role);
        leader.ProcessReady(); // sends the TimeoutNow
        cluster.DeliverPending();
        leader.Crash();

        // Under the old configuration node 2 would need node 1's vote; the TimeoutNow told it the removal committed.
        cluster.Stabilize();
        Assert.Equal(Role.Leader, cluster[2].Raft!.Role);
        Assert.Equal([2UL], cluster[2].Raft!.Membership.Voters);
    }

    [Fact]
    public void AHandoverHeldBackByAnUnappliedChangeIsDroppedOnceTheLeaderWouldHaveAbandonedIt()
    {
        var (cluster, leader) = ChangeCommittedButUnappliedOnNode2();

        var term = leader.Raft!.Term;
        var node2 = cluster[2].Raft!;
        node2.Step(new Message { Type = MessageType.TimeoutNow, From = 1, To = 2, Term = term });
        Assert.Equal(Role.Follower, node2.Role);

        // Node 2's host is slow: an election timeout passes before it applies the change; the handover is stale then.
        for (var i = 0; i < 20; i++)
        {
            node2.Tick();
        }

        cluster[2].ProcessReady();
        Assert.Equal(Role.Follower, node2.Role);
        Assert.Equal(term, node2.Term);
    }

    [Fact]
    public void AVoterDoesNotCampaignWhileACommittedChangeIsUnappliedAndDoesOnceItIsApplied()
    {
        var (cluster, leader) = ChangeCommittedButUnappliedOnNode2();
        var node2 = cluster[2].Raft!;
        Assert.True(node2.CommitIndex > node2.AppliedIndex);

        // Node 2's host is slow to apply and hears nothing more: its election timer runs out under a configuration
        // that is about to change, and it must wait (as etcd's raft does).
        for (var i = 0; i < 2 * 10; i++)
        {
            node2.Tick();
        }

        Assert.Equal(Role.Follower, node2.Role);

        // Once applied, the next election timeout (the refused one restarted the timer) starts a campaign.
        cluster[2].ProcessReady();
        Assert.True(node2.Membership.IsLearner(4));
        for (var i = 0; i < 2 * 10 && node2.Role == Role.Follower; i++)
        {
            node2.Tick();
        }

        Assert.Equal(Role.PreCandidate, node2.Role);
    }

    [Fact]
    public void AReadWaitingOnTheOnlyOtherVoterIsAnsweredWhenThatVoterIsRemoved()
    {
        // The removal of node 2 is committed, not applied, when a read opens a round that asks node 2; the same Ready
        // applies the removal, and node 2's answer is then ignored (it has no progress any more). With one voter left
        // nothing else ever released the read: no heartbeats to send, no CheckQuorum to depose a single voter.
        var (cluster, leader) = RemovalOfNode2CommittedNotApplied();

        leader.Raft!.ReadIndex(7);
        leader.ProcessReady();
        cluster.Stabilize();
        cluster.Tick(20);

        Assert.Equal([1UL], leader.Raft.Membership.Voters);
        Assert.True(leader.ReadStates.Any(read => read.Context == 7) || leader.DroppedReads.Contains(7UL), "the read was never answered nor dropped");
    }

    [Fact]
    public void ALeadershipHandoverReachingALearnerWhosePromotionIsCommittedButNotAppliedIsKeptUntilItApplies()
    {
        // The leader commits node 3's promotion and hands leadership to it at once; node 3 steps the commit and the
        // TimeoutNow before its next Ready, still a learner. The handover was dropped (a learner cannot campaign), and
        // the old leader refused proposals for an election timeout with no new leader coming.
        var cluster = new TestCluster(2);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        cluster.AddNode(3);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 3)).Accepted);
        cluster.Stabilize();
        cluster.Tick(2);
        cluster.Stabilize();

        Assert.True(leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.PromoteLearner, 3)).Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        cluster[2].ProcessReady();
        cluster[3].ProcessReady();
        cluster.DeliverPending(); // the leader commits the promotion
        leader.ProcessReady(); // sends the commit, applies the promotion
        Assert.True(leader.Raft.Membership.IsVoter(3));

        Assert.True(leader.Raft.TransferLeadership(3));
        leader.ProcessReady();
        cluster.DeliverPending(); // node 3 steps the commit and the TimeoutNow together, before its next Ready
        cluster.Stabilize();

        Assert.Equal(Role.Leader, cluster[3].Raft!.Role);
    }

    [Fact]
    public void ASecondChangeIsRefusedUntilTheFirstIsAppliedOnTheLeaderNotMerelyCommitted()
    {
        var (cluster, leader) = RemovalOfNode2CommittedNotApplied();
        Assert.Equal([1UL, 2UL], leader.Raft!.Membership.Voters);

        // Judged against {1, 2}, still in effect, removing node 1 looks valid; applied after the first removal it would
        // leave no voter at all.
        Assert.Equal(ProposeStatus.ConfChangePending, leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 1)).Status);

        cluster.Stabilize();
        Assert.Equal([1UL], leader.Raft.Membership.Voters);
        Assert.Equal(ProposeStatus.InvalidConfChange, leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 1)).Status);
    }

    [Fact]
    public void ANewLeaderProposesNoChangeBeforeItsNoOpIsAppliedAndAnEarlierTermsChangeInItsLogTakesEffectFirst()
    {
        // Without CheckQuorum, followers answer a (pre-)vote at once instead of waiting out the old leader's lease.
        var cluster = new TestCluster(3, configure: o => o.CheckQuorum = false);
        var oldLeader = cluster.ElectLeader(3);
        cluster.Tick(1);

        // The old leader's change reaches node 1 only, and node 1's acknowledgement is lost: it does not commit.
        cluster.Cut(3, 2);
        cluster.Cut(1, 3);
        Assert.True(oldLeader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Accepted);
        cluster.Stabilize();
        var changeIndex = oldLeader.Raft.LastIndex;
        Assert.True(cluster[1].Raft!.TryGetLogTerm(changeIndex, out _));
        Assert.True(cluster[1].Raft!.CommitIndex < changeIndex);
        cluster.Isolate(3);

        // Node 1 wins with node 2's vote, but node 2's acknowledgements of its no-op are lost for now.
        cluster.Drop = m => m is { Type: MessageType.AppendResponse, From: 2 };
        cluster[1].Raft!.Campaign();
        cluster.Stabilize();
        var leader = cluster[1];
        Assert.Equal(Role.Leader, leader.Raft!.Role);
        Assert.False(leader.Raft.Membership.Contains(4));

        // Until an entry of its own term commits (and with it the earlier term's change), no change is accepted: two
        // changes in flight at once could make two configurations without a common majority.
        Assert.Equal(ProposeStatus.ConfChangePending, leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 5)).Status);
        Assert.Equal(ProposeStatus.ConfChangePending, leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 2)).Status);

        cluster.Drop = null;
        cluster.Tick(2, 1, 2);
        Assert.True(leader.Raft.Membership.IsLearner(4));
        Assert.True(cluster[2].Raft!.Membership.IsLearner(4));
        // The next change is judged against the configuration with the earlier change in it.
        Assert.Equal(ProposeStatus.InvalidConfChange, leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Status);
        Assert.True(leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 5)).Accepted);
    }

    [Fact]
    public void AnUncommittedChangeNeverTakesEffectAndANewLeaderCutsItWithoutAnythingToRevert()
    {
        var cluster = new TestCluster(3);
        var oldLeader = cluster.ElectLeader(1);
        cluster.Tick(1);
        var before = oldLeader.Raft!.Membership;

        // The leader appends a change nobody else hears of, and then a write.
        cluster.Isolate(1);
        Assert.True(oldLeader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 3)).Accepted);
        var changeIndex = oldLeader.Raft.LastIndex;
        oldLeader.Propose("lost");
        cluster.Stabilize();
        Assert.Equal(before, oldLeader.Raft.Membership); // appended, not in effect

        // The others elect a leader that never saw it and commit entries past its index.
        cluster.TickUntil(() => cluster[2].Raft!.Role == Role.Leader || cluster[3].Raft!.Role == Role.Leader, 100);
        var leader = cluster.Leader()!;
        Assert.True(leader.Propose("kept").Accepted);
        cluster.Stabilize();
        Assert.True(leader.Raft!.CommitIndex > changeIndex);

        cluster.Heal();
        cluster.Tick(3);
        Assert.Equal(Role.Follower, oldLeader.Raft.Role);
        Assert.True(oldLeader.Raft.TryGetLogTerm(changeIndex, out var term) && term == leader.Raft.Term);
        Assert.All(cluster.Nodes, n => Assert.Equal(before, n.Raft!.Membership));
        Assert.Contains("kept", oldLeader.Applied);
        Assert.DoesNotContain("lost", oldLeader.Applied);

        // And a restart rebuilds the same membership from the log it now holds.
        oldLeader.Restart();
        Assert.Equal(before, oldLeader.Raft!.Membership);
    }

    [Fact]
    public void AVoterHoldingItsOwnUncommittedRemovalStillCampaignsAndThenStandsDownOnceTheRemovalCommits()
    {
        var cluster = new TestCluster(3);
        var oldLeader = cluster.ElectLeader(1);
        cluster.Tick(1);

        // The removal of node 2 reaches node 2 only; the leader dies before it commits.
        cluster.Cut(1, 3);
        cluster.Cut(2, 1);
        Assert.True(oldLeader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 2)).Accepted);
        cluster.Stabilize();
        oldLeader.Crash();
        cluster.Heal();

        // Node 3 cannot win (node 2's log is longer), so the cluster needs node 2 to lead: it is still a voter until
        // its removal commits. Under its leadership the removal commits, it stands down and node 3 is left with
        // the configuration {1, 3}, whose other voter is down.
        cluster.TickUntil(() => cluster[2].Raft!.Role == Role.Leader || cluster[2].Raft!.Membership.Voters.Count == 2, 100);
        cluster.Stabilize();
        Assert.Equal([1UL, 3UL], cluster[2].Raft!.Membership.Voters);
        Assert.Equal([1UL, 3UL], cluster[3].Raft!.Membership.Voters);
        Assert.NotEqual(Role.Leader, cluster[2].Raft!.Role);

        oldLeader.Start();
        cluster.TickUntil(() => cluster[1].Raft!.Role == Role.Leader || cluster[3].Raft!.Role == Role.Leader, 100);
        var leader = cluster.Leader()!;
        Assert.True(leader.Propose("after").Accepted);
        cluster.Stabilize();
        Assert.Contains("after", cluster[1].Applied);
        Assert.Contains("after", cluster[3].Applied);
    }

    [Fact]
    public void ARemovedVoterThatNeverLearnsOfItsRemovalCannotDisruptTheCluster()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);

        // Node 3 acknowledges its removal but never hears that it committed: it goes on believing it is a voter.
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 3)).Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        cluster.Cut(1, 3);
        cluster.Stabilize();
        Assert.Equal([1UL, 2UL], leader.Raft.Membership.Voters);
        Assert.True(cluster[3].Raft!.Membership.IsVoter(3));
        cluster.Heal();

        // The leader no longer sends it anything, so it campaigns again and again: its pre-votes find the others
        // hearing from their leader, and nothing moves.
        var term = leader.Raft.Term;
        cluster.Tick(200);
        Assert.Equal(Role.Leader, leader.Raft.Role);
        Assert.Equal(term, leader.Raft.Term);
        Assert.Equal(term, cluster[2].Raft!.Term);
        Assert.True(cluster.Delivered.Exists(m => m is { Type: MessageType.PreVote, From: 3 }));
        Assert.True(leader.Propose("still").Accepted);
        cluster.Stabilize();
        Assert.Contains("still", cluster[2].Applied);
    }

    [Fact]
    public void ALeaderThatAppliesItsOwnRemovalFailsItsPendingReadsInsteadOfAnsweringThem()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);

        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 1)).Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        cluster[2].ProcessReady();
        cluster[3].ProcessReady();
        cluster.DeliverPending(); // the removal is committed on the leader, not yet applied

        // A read whose heartbeat round is answered by no one before the removal applies.
        cluster.Drop = m => m.Type == MessageType.HeartbeatResponse;
        leader.Raft.ReadIndex(77);
        cluster.Stabilize();
        Assert.NotEqual(Role.Leader, leader.Raft.Role);
        Assert.DoesNotContain(leader.ReadStates, r => r.Context == 77);
        Assert.Contains(77UL, leader.DroppedReads);
    }

    [Fact]
    public void AReadRoundIsConfirmedByAQuorumOfTheConfigurationInEffectWhenTheAnswersArrive()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        cluster.AddNode(4);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Accepted);
        cluster.Stabilize();
        cluster.Tick(2);

        // The promotion commits and applies on the leader while a read round is out: the old quorum (two of three)
        // answered, the new one needs three of four.
        Assert.True(leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.PromoteLearner, 4)).Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        foreach (var id in new ulong[] { 2, 3, 4 })
        {
            cluster[id].ProcessReady();
        }

        cluster.DeliverPending(); // committed on the leader
        leader.Raft.ReadIndex(5);
        cluster.Cut(3, 1);
        cluster.Cut(4, 1);
        cluster.Stabilize(); // applies the promotion; node 2 answers the round
        Assert.Equal(4, leader.Raft.Membership.Voters.Count);
        Assert.Empty(leader.ReadStates);

        cluster.Heal();
        cluster.Tick(1);
        Assert.Single(leader.ReadStates, r => r.Context == 5);
    }

    [Fact]
    public void LeadershipIsNeverHandedToALearnerAndATransferToAVoterBeingRemovedEndsWithTheRemoval()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        cluster.AddNode(4);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Accepted);
        cluster.Stabilize();
        cluster.Tick(2);

        Assert.False(leader.Raft.TransferLeadership(4));
        cluster[4].Raft!.Step(new Message { Type = MessageType.TimeoutNow, From = 1, To = 4, Term = leader.Raft.Term });
        cluster.Stabilize();
        Assert.Equal(Role.Follower, cluster[4].Raft!.Role);
        Assert.Equal(Role.Leader, leader.Raft.Role);

        // Node 3's removal is pending when a transfer to it starts; it cannot catch up (its link is cut), and once the
        // removal applies the transfer is over: proposals are accepted again without waiting out the transfer.
        cluster.Cut(1, 3);
        Assert.True(leader.Raft.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 3)).Accepted);
        Assert.True(leader.Raft.TransferLeadership(3));
        Assert.Equal(ProposeStatus.TransferInProgress, leader.Propose("during").Status);
        cluster.Stabilize();
        Assert.False(leader.Raft.Membership.Contains(3));
        Assert.Equal(Role.Leader, leader.Raft.Role);
        Assert.True(leader.Propose("after").Accepted);
    }

    /// <summary>Node 1 leads three voters and commits adding learner 4; node 2 has heard of the commit and not applied it.</summary>
    private static (TestCluster Cluster, TestNode Leader) ChangeCommittedButUnappliedOnNode2()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        cluster[2].ProcessReady();
        cluster[3].ProcessReady();
        cluster.DeliverPending();
        leader.ProcessReady(); // sends the commit
        cluster.DeliverPending(); // node 2 knows the change committed, has not applied it
        return (cluster, leader);
    }

    /// <summary>Voters 1 and 2, node 1 leading: the removal of node 2 is committed on the leader and not yet applied.</summary>
    private static (TestCluster Cluster, TestNode Leader) RemovalOfNode2CommittedNotApplied()
    {
        var cluster = new TestCluster(2);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 2)).Accepted);
        leader.ProcessReady();
        cluster.DeliverPending();
        cluster[2].ProcessReady();
        cluster.DeliverPending();
        Assert.True(leader.Raft.CommitIndex > leader.Raft.AppliedIndex);
        return (cluster, leader);
    }
}
