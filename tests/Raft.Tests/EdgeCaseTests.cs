using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

/// <summary>The named edge cases of the foundation issue, each a deterministic scenario.</summary>
public sealed class EdgeCaseTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void PreVoteStopsAPartitionedNodeFromDisruptingTheLeaderOnRejoin(bool preVote)
    {
        var cluster = new TestCluster(3, configure: o => { o.PreVote = preVote; o.CheckQuorum = false; });
        cluster.ElectLeader(1);
        var term = cluster[1].Raft!.Term;

        cluster.Isolate(3);
        cluster.Tick(100); // node 3 times out again and again
        cluster.Heal();
        cluster.Tick(5);

        if (preVote)
        {
            Assert.Equal(Role.Leader, cluster[1].Raft!.Role);
            Assert.Equal(term, cluster[1].Raft!.Term);
            Assert.Equal(term, cluster[3].Raft!.Term);
        }
        else
        {
            // Without PreVote the rejoining node's inflated term deposes the leader: the disruption PreVote prevents.
            Assert.True(cluster[1].Raft!.Term > term);
        }
    }

    [Fact]
    public void ABehindCandidateCampaigningOverAndOverDoesNotPutOffTheElectionOfAFollowerAheadOfIt()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Isolate(3);
        for (var i = 0; i < 5; i++)
        {
            Assert.True(leader.Propose($"v{i}").Accepted);
        }

        cluster.Stabilize();
        cluster.Heal();
        cluster.Isolate(1);
        var behind = cluster[3].Raft!;
        var ahead = cluster[2].Raft!;
        var behindLastTerm = behind.Term;
        Assert.True(behind.LastIndex < ahead.LastIndex);

        // Node 3 asks for a vote at a new term every tick, as a node without pre-vote whose log is behind would. Node 2
        // refuses each, and must still run for leader within its own randomized election timeout.
        var ticks = 0;
        while (ahead.Role == Role.Follower && ticks <= 2 * 10)
        {
            ahead.Step(new Message
            {
                Type = MessageType.Vote, From = 3, To = 2, Term = ahead.Term + 1, Index = behind.LastIndex, LogTerm = behindLastTerm,
            });
            cluster.Tick(1, only: 2);
            ticks++;
        }

        Assert.True(ahead.Role != Role.Follower, $"node 2 did not campaign within {ticks} ticks");
    }

    [Fact]
    public void CheckQuorumMakesAnIsolatedLeaderStepDown()
    {
        var cluster = new TestCluster(3);
        cluster.ElectLeader(1);
        cluster.Isolate(1);
        var ticks = cluster.TickUntil(() => cluster[1].Raft!.Role != Role.Leader, 100);
        Assert.InRange(ticks, 1, 2 * 10);
        Assert.Equal(0UL, cluster[1].Raft!.Leader);
    }

    [Fact]
    public void CheckQuorumCountsVotersOnlySoALeaderHeardOnlyByALearnerStepsDown()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        cluster.AddNode(4);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Accepted);
        cluster.Stabilize();
        cluster.Tick(1);
        Assert.True(leader.Raft.Membership.IsLearner(4));

        // The leader and the learner hear each other, and nobody else: the learner must not keep the leader in office.
        foreach (var (a, b) in new (ulong, ulong)[] { (1, 2), (1, 3), (4, 2), (4, 3) })
        {
            cluster.Cut(a, b);
            cluster.Cut(b, a);
        }

        var ticks = cluster.TickUntil(() => leader.Raft.Role != Role.Leader, 100);
        Assert.InRange(ticks, 1, 2 * 10);
    }

    [Fact]
    public void LeadershipTransferToALaggingFollowerCatchesItUpFirst()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Isolate(3);
        for (var i = 0; i < 20; i++)
        {
            Assert.True(leader.Propose($"v{i}").Accepted);
        }

        cluster.Stabilize();
        Assert.True(cluster[3].Raft!.LastIndex < leader.Raft!.LastIndex);

        cluster.Heal();
        Assert.True(leader.Raft!.TransferLeadership(3));
        Assert.Equal(ProposeStatus.TransferInProgress, leader.Propose("refused").Status);
        cluster.Stabilize();
        cluster.Tick(2);

        Assert.Equal(Role.Leader, cluster[3].Raft!.Role);
        Assert.Equal(Role.Follower, cluster[1].Raft!.Role);
        Assert.True(cluster[3].Propose("after").Accepted);
        cluster.Stabilize();
        cluster.Tick(2);
        var expected = Enumerable.Range(0, 20).Select(i => $"v{i}").Append("after").ToList();
        Assert.All(cluster.Nodes, n => Assert.Equal(expected, n.Applied));
    }

    [Fact]
    public void LeadershipTransferToAnUnreachableFollowerIsAbandonedAfterAnElectionTimeout()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Isolate(3);
        Assert.True(leader.Raft!.TransferLeadership(3));
        cluster.TickUntil(() => leader.Propose("x").Accepted, 30);
        Assert.Equal(Role.Leader, leader.Raft!.Role);
    }

    [Fact]
    public void AHandoverWithoutATargetPicksAVoterThatStillAnswersOverAMoreCaughtUpOneThatDied()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        // Node 2 answers heartbeats but gets no entries; node 3 gets them all, then dies.
        cluster.Drop = m => m is { To: 2, Type: MessageType.Append };
        for (var i = 0; i < 5; i++)
        {
            Assert.True(leader.Propose($"v{i}").Accepted);
        }

        cluster.Stabilize();
        var progress = leader.Raft!.GetStatus().Progress.ToDictionary(p => p.Id);
        Assert.True(progress[3].Match > progress[2].Match); // "the voter with the most of the log" would be node 3
        Assert.Equal(3UL, leader.Raft.TransferCandidate()); // both answer: the more caught-up one

        cluster[3].Crash();
        cluster.Tick(3); // heartbeat rounds that node 2 answers and node 3 does not
        Assert.Equal(2UL, leader.Raft.TransferCandidate());

        cluster.Drop = null;
        Assert.True(leader.Raft.TransferLeadership(leader.Raft.TransferCandidate()));
        cluster.TickUntil(() => cluster[2].Raft!.Role == Role.Leader, 20);
        Assert.Equal(Role.Leader, cluster[2].Raft!.Role);
    }

    [Fact]
    public void ANewLeaderCountsNoMemberAsAnsweringUntilItHasAnswered()
    {
        // Fresh progress must not make a dead voter look alive for the new leader's first election timeout: the
        // membership commands' quorum check and TransferCandidate read it.
        var cluster = new TestCluster(3);
        cluster[3].Crash();
        var leader = cluster.ElectLeader(1);
        var progress = leader.Raft!.GetStatus().Progress.ToDictionary(p => p.Id);
        Assert.False(progress[3].HeardThisTerm);
        Assert.True(progress[2].HeardThisTerm);
        Assert.Equal(2UL, leader.Raft.TransferCandidate());
    }

    [Fact]
    public void ReadIndexOnALeaderDeposedMidRequestIsDroppedNotAnswered()
    {
        var cluster = new TestCluster(3, configure: o => o.CheckQuorum = false);
        var oldLeader = cluster.ElectLeader(1);
        cluster.Tick(1);

        // The leader asks its followers to confirm it still leads, but they cannot hear it any more...
        cluster.Isolate(1);
        oldLeader.Raft!.ReadIndex(42);
        cluster.Stabilize();
        Assert.Empty(oldLeader.ReadStates);

        // ...because they elected someone else, who commits a write the old leader never saw.
        cluster.ElectLeader(2);
        Assert.True(cluster[2].Propose("newer").Accepted);
        cluster.Stabilize();

        cluster.Heal();
        cluster.Tick(3);
        Assert.Equal(Role.Follower, oldLeader.Raft!.Role);
        Assert.DoesNotContain(oldLeader.ReadStates, r => r.Context == 42);
        Assert.Contains(42UL, oldLeader.DroppedReads);
    }

    [Fact]
    public void ReadIndexOnALeaderAndThroughAFollowerReturnsTheCommitIndex()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        Assert.True(leader.Propose("a").Accepted);
        cluster.Stabilize();

        leader.Raft!.ReadIndex(7);
        cluster[2].Raft!.ReadIndex(8);
        cluster.Stabilize();

        var commit = leader.Raft!.CommitIndex;
        Assert.Equal([new ReadState(7, commit)], leader.ReadStates);
        Assert.Equal([new ReadState(8, commit)], cluster[2].ReadStates);
    }

    [Fact]
    public void RemovingTheLeaderCommitsTheChangeThenHandsOver()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        var result = leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 1));
        Assert.True(result.Accepted, result.ToString());
        cluster.Stabilize();
        cluster.TickUntil(() => cluster[2].Raft!.Role == Role.Leader || cluster[3].Raft!.Role == Role.Leader, 50);

        Assert.NotEqual(Role.Leader, cluster[1].Raft!.Role);
        var newLeader = cluster.Leader()!;
        Assert.Equal([2UL, 3UL], newLeader.Raft!.Membership.Voters);
        Assert.True(newLeader.Propose("after-removal").Accepted);
        cluster.Stabilize();
        cluster.Tick(2);
        Assert.Contains("after-removal", cluster[2].Applied);
        Assert.Contains("after-removal", cluster[3].Applied);

        // The removed node never campaigns again.
        cluster.Tick(100);
        Assert.NotEqual(Role.Leader, cluster[1].Raft!.Role);
    }

    [Fact]
    public void ASecondMembershipChangeIsRefusedWhileOneIsPending()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        cluster.Isolate(2);
        cluster.Isolate(3);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Accepted);
        Assert.Equal(ProposeStatus.ConfChangePending, leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 5)).Status);
    }

    [Fact]
    public void AnInvalidMembershipChangeIsRefusedWithAReason()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        var result = leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.Remove, 9));
        Assert.Equal(ProposeStatus.InvalidConfChange, result.Status);
        Assert.Contains("not a member", result.Reason, StringComparison.Ordinal);
        Assert.Equal(ProposeStatus.InvalidConfChange, leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.PromoteLearner, 2)).Status);
    }

    [Fact]
    public void LearnerCatchesUpWithoutVotingThenIsPromoted()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        for (var i = 0; i < 30; i++)
        {
            leader.Propose($"v{i}");
        }

        cluster.Stabilize();
        cluster.AddNode(4);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Accepted);
        cluster.Stabilize();
        cluster.Tick(3);
        Assert.Equal(Enumerable.Range(0, 30).Select(i => $"v{i}"), cluster[4].Applied);
        Assert.True(cluster[4].Raft!.Membership.IsLearner(4));
        // The new node learned the founding voters from the log, not just its own addition.
        Assert.Equal([1UL, 2UL, 3UL], cluster[4].Raft!.Membership.Voters);

        // A learner never counts toward commitment: with both other voters cut off, nothing commits.
        cluster.Isolate(2);
        cluster.Isolate(3);
        var commitBefore = leader.Raft!.CommitIndex;
        leader.Propose("not-committed");
        cluster.Stabilize();
        Assert.Equal(commitBefore, leader.Raft!.CommitIndex);
        // ...and never campaigns.
        cluster.Tick(60, 4);
        Assert.Equal(Role.Follower, cluster[4].Raft!.Role);
        cluster.Heal();
        cluster.Tick(3);

        Assert.True(cluster.Leader()!.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.PromoteLearner, 4)).Accepted);
        cluster.Stabilize();
        cluster.Tick(3);
        Assert.All(cluster.Nodes, n => Assert.True(n.Raft!.Membership.IsVoter(4)));
        Assert.Equal(4, cluster.Leader()!.Raft!.Membership.Voters.Count);
    }

    [Fact]
    public void AFollowerFarBehindCatchesUpByInstallingASnapshot()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Isolate(3);
        for (var i = 0; i < 200; i++)
        {
            leader.Propose($"v{i}");
        }

        cluster.Stabilize();
        leader.TakeSnapshot(keepEntries: 5);
        cluster[2].TakeSnapshot(keepEntries: 5);
        Assert.True(leader.Storage.FirstIndex > cluster[3].Raft!.LastIndex + 1);

        cluster.Heal();
        cluster.Tick(3);

        Assert.Contains(cluster.Delivered, m => m.Type == MessageType.Snapshot && m.To == 3);
        Assert.Equal(leader.Applied, cluster[3].Applied);
        Assert.Equal(leader.Raft!.LastIndex, cluster[3].Raft!.LastIndex);
        Assert.True(leader.Propose("after").Accepted);
        cluster.Stabilize();
        cluster.Tick(2);
        Assert.Equal("after", cluster[3].Applied[^1]);
    }

    [Fact]
    public void ASnapshotOlderThanTheCommitIndexIsNotInstalled()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        for (var i = 0; i < 5; i++)
        {
            Assert.True(leader.Propose($"a{i}").Accepted);
        }

        cluster.Stabilize();
        leader.TakeSnapshot();
        var stale = new Message { Type = MessageType.Snapshot, From = 1, To = 2, Term = leader.Raft!.Term, Snapshot = leader.Storage.Snapshot };
        var staleData = leader.SnapshotData;
        for (var i = 0; i < 5; i++)
        {
            Assert.True(leader.Propose($"b{i}").Accepted);
        }

        cluster.Stabilize();
        cluster.Tick(1);

        // The follower compacted past the snapshot's index, so no entry of its log can match it: only the commit index
        // tells that the snapshot is behind. Installed, it would roll the follower's state back.
        var follower = cluster[2];
        follower.TakeSnapshot();
        var (commit, last, applied) = (follower.Raft!.CommitIndex, follower.Raft.LastIndex, follower.Applied.ToList());
        Assert.True(stale.Snapshot.Index < commit);
        Assert.True(stale.Snapshot.Index < follower.Raft.FirstLogIndex - 1);

        follower.IncomingSnapshot = staleData; // the delayed snapshot message arrives
        follower.Raft.Step(stale);
        cluster.Stabilize();

        Assert.Equal(commit, follower.Raft.CommitIndex);
        Assert.Equal(last, follower.Raft.LastIndex);
        Assert.Equal(applied, follower.Applied);
        Assert.Equal(10, applied.Count);
    }

    [Fact]
    public void AFollowerWithAConflictingUncommittedSuffixIsOverwritten()
    {
        var cluster = new TestCluster(3);
        var oldLeader = cluster.ElectLeader(1);
        Assert.True(oldLeader.Propose("committed").Accepted);
        cluster.Stabilize();
        cluster.Tick(1);

        // The old leader appends entries nobody else gets: an uncommitted suffix.
        cluster.Isolate(1);
        for (var i = 0; i < 5; i++)
        {
            oldLeader.Propose($"lost{i}");
        }

        cluster.Stabilize();
        var oldLast = oldLeader.Raft!.LastIndex;

        cluster.TickUntil(() => cluster[2].Raft!.Role == Role.Leader || cluster[3].Raft!.Role == Role.Leader, 100);
        var newLeader = cluster[2].Raft!.Role == Role.Leader ? cluster[2] : cluster[3];
        for (var i = 0; i < 3; i++)
        {
            newLeader.Propose($"kept{i}");
        }

        cluster.Stabilize();
        cluster.Heal();
        cluster.Tick(3);

        Assert.Equal(Role.Follower, oldLeader.Raft!.Role);
        var expected = new[] { "committed", "kept0", "kept1", "kept2" };
        Assert.All(cluster.Nodes, n => Assert.Equal(expected, n.Applied));
        static IEnumerable<string> Log(TestNode node) =>
            node.Raft!.GetLogEntries(1, ulong.MaxValue).Select(e => $"{e.Index}/{e.Term}/{e.Type}/{Convert.ToHexString(e.Data.Span)}");
        Assert.Equal(Log(newLeader), Log(oldLeader));
        Assert.True(oldLast >= 2);
    }

    [Fact]
    public void AStaleAppendThatMatchesDoesNotTruncateAcknowledgedEntries()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        leader.Propose("a");
        cluster.Stabilize();
        var firstAppend = cluster.Delivered.Last(m => m.Type == MessageType.Append && m.To == 2 && m.Entries.Count > 0);
        leader.Propose("b");
        leader.Propose("c");
        cluster.Stabilize();
        var lastBefore = cluster[2].Raft!.LastIndex;

        // Re-deliver the old Append (a duplicate or reordered message): the follower keeps its longer log.
        cluster[2].Raft!.Step(firstAppend);
        cluster.Stabilize();
        Assert.Equal(lastBefore, cluster[2].Raft!.LastIndex);
    }

    [Fact]
    public void AStaleAppendOfEntriesNotYetCommittedThatMatchesDoesNotTruncateTheEntriesAfterThem()
    {
        // The test above re-delivers an Append below the follower's commit index, which is answered before the log is
        // looked at. Here nothing commits (node 3 is cut off and node 2's acknowledgements are lost), so the stale
        // Append reaches the log, whose entries after it were acknowledged and must stay.
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Isolate(3);
        cluster.Cut(2, 1);
        Assert.True(leader.Propose("a").Accepted);
        cluster.Stabilize();
        var firstAppend = cluster.Delivered.Last(m => m.Type == MessageType.Append && m.To == 2 && m.Entries.Count > 0);
        Assert.True(leader.Propose("b").Accepted);
        Assert.True(leader.Propose("c").Accepted);
        cluster.Stabilize();
        var follower = cluster[2].Raft!;
        var lastBefore = follower.LastIndex;
        Assert.True(follower.CommitIndex <= firstAppend.Index, "the follower must not know the stale Append's entries committed");
        Assert.True(lastBefore > firstAppend.Index + (ulong)firstAppend.Entries.Count);

        follower.Step(firstAppend);
        cluster.Stabilize();

        Assert.Equal(lastBefore, follower.LastIndex);
        Assert.Equal(["a", "b", "c"], follower.GetLogEntries(firstAppend.Index + 1, lastBefore)
            .Where(e => e.Type == EntryType.Normal && e.Data.Length > 0)
            .Select(e => System.Text.Encoding.UTF8.GetString(e.Data.Span)));
    }

    [Fact]
    public void ANewLeaderCountsOnlyAcknowledgementsMadeInItsOwnTerm()
    {
        // Node 2 acknowledged two entries to node 1 in an earlier term; a later leader cut them off node 2's log. When
        // node 1 leads again, that acknowledgement tells nothing about node 2's log: counted, it would make node 1's
        // next entry look held by three of five when only nodes 1 and 3 hold it.
        var cluster = new TestCluster(5, configure: o => o.CheckQuorum = false);
        var first = cluster.ElectLeader(1);
        cluster.Tick(1);
        var agreed = first.Raft!.LastIndex;
        foreach (var other in new ulong[] { 3, 4, 5 })
        {
            cluster.Cut(1, other);
            cluster.Cut(other, 1);
        }

        Assert.True(first.Propose("x1").Accepted);
        Assert.True(first.Propose("x2").Accepted);
        cluster.Stabilize();
        Assert.Equal(agreed + 2, cluster[2].Raft!.LastIndex);
        Assert.Equal(agreed, first.Raft.CommitIndex);

        cluster.Isolate(1);
        var second = cluster.ElectLeader(3); // with nodes 4 and 5; its no-op replaces x1 and x2 on node 2
        cluster.Heal();
        cluster.Tick(1);
        Assert.Equal(agreed + 1, cluster[2].Raft!.LastIndex);
        Assert.Equal(Role.Follower, first.Raft.Role);
        Assert.Equal(second.Raft!.LastIndex, first.Raft.LastIndex);

        // Node 1 wins again, but only node 3 gets its Appends.
        cluster.Drop = m => m is { From: 1, To: 2 or 4 or 5, Type: MessageType.Append or MessageType.Heartbeat };
        cluster.ElectLeader(1);
        var noOp = first.Raft.LastIndex;
        Assert.Equal(agreed + 2, noOp);
        Assert.True(cluster[3].Raft!.LastIndex >= noOp);
        Assert.True(first.Raft.CommitIndex < noOp, $"commit {first.Raft.CommitIndex} covers the no-op at {noOp}, held by two of five");

        cluster.Drop = null;
        cluster.Tick(1);
        Assert.True(first.Raft.CommitIndex >= noOp);
    }

    [Fact]
    public void RestartRecoversMembershipFromCommittedLogAfterTheSnapshot()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        cluster.AddNode(4);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Accepted);
        cluster.Stabilize();
        cluster.Tick(2);

        cluster[2].Restart();
        Assert.True(cluster[2].Raft!.Membership.IsLearner(4));
    }
}
