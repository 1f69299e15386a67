using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

/// <summary>
/// What a voter checks before granting a vote, and what a granted vote promises: that the voter will not vote again in
/// that term, also after a crash.
/// </summary>
public sealed class VoteRulesTests
{
    [Fact]
    public void AVoteCastInATermAlreadyDurableMustBeSyncedBeforeItIsSent()
    {
        // Without CheckQuorum a follower answers vote requests however recently it heard from its leader.
        var cluster = new TestCluster(3, configure: o => o.CheckQuorum = false);
        var leader = cluster.ElectLeader(1);
        cluster.Isolate(3);
        Assert.True(leader.Propose("x").Accepted);
        cluster.Stabilize();

        var voter = cluster[2].Raft!;
        var behind = cluster[3].Raft!;
        var electionTerm = voter.Term + 1;

        // Node 3's log lacks "x": node 2 refuses it, but takes its term. That Ready syncs the new term, with no vote.
        voter.Step(new Message
        {
            Type = MessageType.Vote, From = 3, To = 2, Term = electionTerm, Index = behind.LastIndex, LogTerm = behind.Term,
        });
        var refusal = voter.GetReady();
        Assert.Equal(new HardState(electionTerm, 0, voter.CommitIndex), refusal.HardState);
        Assert.Contains(refusal.Messages, m => m is { Type: MessageType.VoteResponse, Reject: true });
        cluster[2].Storage.Save(refusal.HardState, refusal.Entries, refusal.Snapshot);
        voter.Advance(refusal);

        // Node 1 asks in the same term with the whole log: node 2 grants. Only the vote changes, and it must be synced.
        voter.Step(new Message
        {
            Type = MessageType.Vote, From = 1, To = 2, Term = electionTerm, Index = leader.Raft!.LastIndex, LogTerm = leader.Raft.Term,
        });
        var grant = voter.GetReady();
        Assert.Equal(1UL, grant.HardState?.Vote);
        Assert.Equal(electionTerm, grant.HardState?.Term);
        Assert.Contains(grant.Messages, m => m is { Type: MessageType.VoteResponse, Reject: false, To: 1 });
        Assert.DoesNotContain(grant.MessagesBeforePersistence, m => m.Type == MessageType.VoteResponse);
        Assert.True(grant.MustSync, "a Ready that casts a vote must be synced before the vote is sent");
    }

    [Fact]
    public void AVoteIsRefusedToACandidateWithALongerLogWhoseLastTermIsOlder()
    {
        // Raft paper 5.4.1: the last terms decide; the lengths only when the last terms are equal.
        var cluster = new TestCluster(3, configure: o => o.CheckQuorum = false);
        cluster.ElectLeader(1);
        var voter = cluster[2].Raft!;
        voter.TryGetLogTerm(voter.LastIndex, out var lastTerm);
        Assert.True(lastTerm > 1);

        voter.Step(new Message
        {
            Type = MessageType.Vote, From = 3, To = 2, Term = voter.Term + 1, Index = voter.LastIndex + 5, LogTerm = lastTerm - 1,
        });
        var ready = voter.GetReady();

        var response = Assert.Single(ready.Messages, m => m.Type == MessageType.VoteResponse);
        Assert.True(response.Reject);
        Assert.Equal(0UL, ready.HardState?.Vote ?? voter.GetStatus().Vote);
    }

    [Fact]
    public void OnlyVotersOfTheCandidatesConfigurationCountTowardsItsElection()
    {
        var cluster = new TestCluster(3, configure: o => o.PreVote = false);
        var leader = cluster.ElectLeader(1);
        cluster.Tick(1);
        cluster.AddNode(4);
        Assert.True(leader.Raft!.ProposeConfChange(new ConfChange(ConfChangeType.AddLearner, 4)).Accepted);
        cluster.Stabilize();
        cluster.Tick(1);
        var candidate = cluster[2].Raft!;
        Assert.True(candidate.Membership.IsLearner(4));

        candidate.Campaign();
        Assert.Equal(Role.Candidate, candidate.Role);

        // With its own vote, a grant from the learner or from a node outside the configuration would make two: a
        // quorum of three voters, were they counted.
        foreach (var from in new ulong[] { 4, 9 })
        {
            candidate.Step(new Message { Type = MessageType.VoteResponse, From = from, To = 2, Term = candidate.Term });
        }

        Assert.Equal(Role.Candidate, candidate.Role);

        candidate.Step(new Message { Type = MessageType.VoteResponse, From = 3, To = 2, Term = candidate.Term });
        Assert.Equal(Role.Leader, candidate.Role);
    }

    [Fact]
    public void AVoteGrantedInAnEarlierElectionDoesNotCountInTheNext()
    {
        // The voter promised nothing about the later term: it may grant that one to another candidate.
        var cluster = new TestCluster(3, configure: o => o.PreVote = false);
        cluster.ElectLeader(1);
        cluster.Tick(1);
        var candidate = cluster[2].Raft!;
        candidate.Campaign();
        var firstTerm = candidate.Term;
        candidate.Campaign(); // the first election went unanswered: it runs again
        Assert.Equal(firstTerm + 1, candidate.Term);

        candidate.Step(new Message { Type = MessageType.VoteResponse, From = 3, To = 2, Term = firstTerm });
        Assert.Equal(Role.Candidate, candidate.Role);

        candidate.Step(new Message { Type = MessageType.VoteResponse, From = 3, To = 2, Term = candidate.Term });
        Assert.Equal(Role.Leader, candidate.Role);
    }
}
