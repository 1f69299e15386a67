using Dcache.Node.Consensus;
using Dcache.Raft;
using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A write proposed by a leader whose entry another leader's entries replaced never applies: its command is answered
/// Unavailable (not applied, safe to retry) as soon as the node knows, never left waiting for its deadline.
/// </summary>
public sealed class SupersededWriteTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task A_write_whose_index_the_node_reuses_when_it_leads_again_is_answered()
    {
        // Node 1 leads term 2 and proposes three writes that reach no one; node 2, elected in term 3, replaces them with
        // its no-op; node 1 leads again in term 4 (its no-op takes the second write's index) and its next write takes the
        // third's. That index then holds another entry for good, and the third write must be answered.
        await using var node = PeerlessNode.Start();
        var driver = node.Driver;
        var noOp = await node.LeadAsync(term: 2, voter: 2);
        var first = driver.ExecuteAsync(Set(1, "a"));
        var second = driver.ExecuteAsync(Set(2, "b"));
        var third = driver.ExecuteAsync(Set(3, "c"));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 3, "the three writes were not appended");

        // Node 2 leads term 3 with node 1's log up to the no-op of term 2, and appends its own no-op after it.
        Assert.True(node.Inbox.TryPost(new Message
        {
            Type = MessageType.Append, From = 2, To = 1, Term = 3, Index = noOp, LogTerm = 2,
            Entries = [new Entry(noOp + 1, 3, EntryType.Normal, ReadOnlyMemory<byte>.Empty)],
        }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 1 && raft.Term == 3, "node 1 did not take node 2's entry");

        await node.LeadAsync(term: 4, voter: 3);
        var fourth = driver.ExecuteAsync(Set(4, "d"));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 3, "the write of term 4 was not appended");
        Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 3, To = 1, Term = 4, Index = noOp + 3 }, 0));

        Assert.True((await fourth.WaitAsync(Patience)).Ok);
        await AssertAnsweredNotAppliedAsync((first, "first"), (second, "second"), (third, "third"));
    }

    [Fact]
    public async Task A_write_whose_index_another_leaders_membership_change_takes_is_answered()
    {
        // Node 1 leads term 2 and proposes two writes that reach no one; node 2, elected in term 3, puts its no-op and
        // then a membership change at their indexes and commits both. Node 1 applies them: neither write applied.
        await using var node = PeerlessNode.Start();
        var driver = node.Driver;
        var noOp = await node.LeadAsync(term: 2, voter: 2);
        var first = driver.ExecuteAsync(Set(1, "a"));
        var second = driver.ExecuteAsync(Set(2, "b"));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 2, "the two writes were not appended");

        var change = new ConfChange(ConfChangeType.AddLearner, 4, "http://127.0.0.1:4").Encode();
        Assert.True(node.Inbox.TryPost(new Message
        {
            Type = MessageType.Append, From = 2, To = 1, Term = 3, Index = noOp, LogTerm = 2, Commit = noOp + 2,
            Entries = [new Entry(noOp + 1, 3, EntryType.Normal, ReadOnlyMemory<byte>.Empty), new Entry(noOp + 2, 3, EntryType.ConfChange, change)],
        }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.AppliedIndex == noOp + 2, "node 1 did not apply node 2's entries");

        await AssertAnsweredNotAppliedAsync((first, "first"), (second, "second"));
    }

    [Fact]
    public async Task A_membership_change_whose_index_the_node_reuses_when_it_leads_again_completes_as_not_applied()
    {
        // As the first case, with a membership change where the third write was: node 1 leads again in term 4 and its
        // own membership change takes that index.
        await using var node = PeerlessNode.Start();
        var driver = node.Driver;
        var noOp = await node.LeadAsync(term: 2, voter: 2);
        Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 2, To = 1, Term = 2, Index = noOp }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.AppliedIndex == noOp, "the no-op of term 2 did not apply");
        _ = driver.ExecuteAsync(Set(1, "a"));
        _ = driver.ExecuteAsync(Set(2, "b"));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 2, "the two writes were not appended");
        var (proposal, refusal, applied) = await driver.ProposeConfChangeAsync(new ConfChange(ConfChangeType.AddLearner, 4, "http://127.0.0.1:4"), _ => null).WaitAsync(Patience);
        Assert.Null(refusal);
        Assert.Equal(noOp + 3, proposal.Index);

        Assert.True(node.Inbox.TryPost(new Message
        {
            Type = MessageType.Append, From = 2, To = 1, Term = 3, Index = noOp, LogTerm = 2,
            Entries = [new Entry(noOp + 1, 3, EntryType.Normal, ReadOnlyMemory<byte>.Empty)],
        }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 1 && raft.Term == 3, "node 1 did not take node 2's entry");

        await node.LeadAsync(term: 4, voter: 3);
        Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 3, To = 1, Term = 4, Index = noOp + 2 }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.AppliedIndex == noOp + 2, "the no-op of term 4 did not apply");
        var (again, _, _) = await driver.ProposeConfChangeAsync(new ConfChange(ConfChangeType.AddLearner, 5, "http://127.0.0.1:5"), _ => null).WaitAsync(Patience);
        Assert.Equal(noOp + 3, again.Index);

        Assert.True(await Task.WhenAny(applied!, Task.Delay(Patience)) == applied, "the superseded membership change never completed");
        Assert.False(await applied!);
    }

    private static async Task AssertAnsweredNotAppliedAsync(params (Task<Proto.Reply> Write, string Name)[] writes)
    {
        foreach (var (superseded, name) in writes)
        {
            Assert.True(await Task.WhenAny(superseded, Task.Delay(Patience)) == superseded, $"the {name} write was not answered");
            var reply = await superseded;
            Assert.Equal(Proto.Reply.ResultOneofCase.Failure, reply.ResultCase);
            Assert.Equal(Proto.FailureKind.Unavailable, reply.Failure.Kind);
        }
    }

    private static Proto.Command Set(ulong id, string key) =>
        new() { Id = id, Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8("v") } };
}
