using Dcache.Raft.Tests.Support;

namespace Dcache.Raft.Tests;

/// <summary>
/// Besides Appends and heartbeats, a node learns of commits from a refused vote and from a TimeoutNow. Either tells it
/// that an (index, term) is committed; that covers its own log only where its entry at that index has that term (log
/// matching): an entry of another term there is a different, uncommitted entry it must not apply.
/// </summary>
public sealed class CommitLearningTests
{
    [Fact]
    public void AVoteRefusalCarryingACommitOfAnotherTermAtThatIndexCommitsNothing()
    {
        var (cluster, node, index, term) = FollowerWithAnUncommittedEntry();

        node.Step(new Message
        {
            Type = MessageType.VoteResponse, From = 3, To = 1, Term = node.Term, Reject = true, Commit = index, LogTerm = term + 1,
        });
        cluster.Stabilize();

        Assert.True(node.CommitIndex < index, $"commit {node.CommitIndex} covers index {index}, whose entry is of term {term}, not {term + 1}");
    }

    [Fact]
    public void ATimeoutNowCarryingACommitOfAnotherTermAtThatIndexCommitsNothing()
    {
        var (cluster, node, index, term) = FollowerWithAnUncommittedEntry();

        node.Step(new Message
        {
            Type = MessageType.TimeoutNow, From = 2, To = 1, Term = node.Term, Index = index, LogTerm = term + 1, Commit = index,
        });

        Assert.True(node.CommitIndex < index, $"commit {node.CommitIndex} covers index {index}, whose entry is of term {term}, not {term + 1}");
    }

    [Fact]
    public void AnAppendCommitsNoEntryPastTheLastOneItMatched()
    {
        var (cluster, node, index, term) = FollowerWithAnUncommittedEntry();
        Assert.True(node.TryGetLogTerm(index - 1, out var previousTerm));

        // The new leader's probe matches at the entry before; it carries no entries and a commit index covering index,
        // where the leader's entry is of its own term. The follower's entry there is another one, unvouched for.
        node.Step(new Message
        {
            Type = MessageType.Append, From = 2, To = 1, Term = node.Term, Index = index - 1, LogTerm = previousTerm, Commit = index,
        });
        cluster.Stabilize();

        Assert.True(node.CommitIndex < index, $"commit {node.CommitIndex} covers index {index}, whose entry of term {term} the Append did not match");
    }

    /// <summary>Node 1 led, appended an entry nobody else got, and follows node 2 in the next term.</summary>
    private static (TestCluster Cluster, RaftNode Node, ulong Index, ulong Term) FollowerWithAnUncommittedEntry()
    {
        var cluster = new TestCluster(3);
        var leader = cluster.ElectLeader(1);
        cluster.Isolate(1);
        Assert.True(leader.Propose("lost").Accepted);
        cluster.Stabilize();
        var node = leader.Raft!;
        var index = node.LastIndex;
        var term = node.Term;
        Assert.True(node.CommitIndex < index);

        cluster.Heal();
        node.Step(new Message { Type = MessageType.Heartbeat, From = 2, To = 1, Term = term + 1, Commit = 0 });
        cluster.Stabilize();
        Assert.Equal(Role.Follower, node.Role);
        Assert.Equal(2UL, node.Leader);
        return (cluster, node, index, term);
    }
}
