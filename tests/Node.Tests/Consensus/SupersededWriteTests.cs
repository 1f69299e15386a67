using Dcache.Node.Consensus;
using Dcache.Raft;
using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A write proposed by a leader whose entry another leader's entries replaced is answered by what the entry committed
/// at its index turns out to be: Unavailable (not applied, safe to retry) when it is another entry, applied when the
/// replaced entry committed through another node after all (possible with five voters or more). It is answered when
/// that index is applied, never left waiting for its deadline, and never earlier than the node can know.
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
        var (again, _, againApplied) = await driver.ProposeConfChangeAsync(new ConfChange(ConfChangeType.AddLearner, 5, "http://127.0.0.1:5"), _ => null).WaitAsync(Patience);
        Assert.Equal(noOp + 3, again.Index);
        Assert.False(applied!.IsCompleted, "the displaced change was answered before its index was applied");
        Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 3, To = 1, Term = 4, Index = noOp + 3 }, 0));

        Assert.True(await Task.WhenAny(applied, Task.Delay(Patience)) == applied, "the superseded membership change never completed");
        Assert.False(await applied);
        Assert.True(await againApplied!.WaitAsync(Patience));
    }

    [Fact]
    public async Task A_write_replaced_in_the_leaders_log_that_commits_through_another_node_is_answered_as_applied()
    {
        // Five voters. Node 1 leads term 2 (votes of 4 and 5) and its three writes reach only node 3. Node 2, elected in
        // term 3 by 4 and 5, replaces them on node 1 with its no-op. Node 1 leads term 4 (4 and 5 again), and its no-op
        // and next write take the second and third writes' indexes. Node 3, whose log still ends with the third write,
        // is then elected in term 5 (4 and 5 have nothing of terms 3 and 4) and commits all three: they applied, and
        // the write of term 4 did not.
        await using var node = PeerlessNode.Start(voters: [1UL, 2UL, 3UL, 4UL, 5UL]);
        var driver = node.Driver;
        var noOp = await node.LeadWithVotesAsync(term: 2, [4UL, 5UL]);
        var first = driver.ExecuteAsync(Set(1, "a"));
        var second = driver.ExecuteAsync(Set(2, "b"));
        var third = driver.ExecuteAsync(Set(3, "c"));
        // On its disk, not only in its log's memory: they are copied from there.
        await DriverWaits.UntilAsync(driver, _ => node.Disk.LastIndex == noOp + 3, "the three writes were not persisted");
        var writes = await CopyEntriesAsync(node, noOp + 1, noOp + 4);

        Assert.True(node.Inbox.TryPost(new Message
        {
            Type = MessageType.Append, From = 2, To = 1, Term = 3, Index = noOp, LogTerm = 2,
            Entries = [new Entry(noOp + 1, 3, EntryType.Normal, ReadOnlyMemory<byte>.Empty)],
        }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 1 && raft.Term == 3, "node 1 did not take node 2's entry");

        await node.LeadWithVotesAsync(term: 4, [4UL, 5UL]);
        var fourth = driver.ExecuteAsync(Set(4, "d"));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 3, "the write of term 4 was not appended");
        await driver.RunOnLoopAsync(_ => true).WaitAsync(Patience); // a loop round after the proposal
        Assert.False(third.IsCompleted, "the third write was answered before anything committed at its index");

        Assert.True(node.Inbox.TryPost(new Message
        {
            Type = MessageType.Append, From = 3, To = 1, Term = 5, Index = noOp, LogTerm = 2, Commit = noOp + 4,
            Entries = [.. writes, new Entry(noOp + 4, 5, EntryType.Normal, ReadOnlyMemory<byte>.Empty)],
        }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.AppliedIndex == noOp + 4, "node 1 did not apply node 3's entries");

        foreach (var (write, name) in new[] { (first, "first"), (second, "second"), (third, "third") })
        {
            Assert.True(await Task.WhenAny(write, Task.Delay(Patience)) == write, $"the {name} write was not answered");
            Assert.True((await write).Ok, $"the {name} write applied but was answered {await write}");
        }

        await AssertAnsweredNotAppliedAsync((fourth, "fourth"));
    }

    [Fact]
    public async Task A_membership_change_replaced_in_the_leaders_log_that_commits_through_another_node_completes_as_applied()
    {
        // As above, with a membership change where the third write was.
        await using var node = PeerlessNode.Start(voters: [1UL, 2UL, 3UL, 4UL, 5UL]);
        var driver = node.Driver;
        var noOp = await node.LeadWithVotesAsync(term: 2, [4UL, 5UL]);
        Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 4, To = 1, Term = 2, Index = noOp }, 0));
        Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 5, To = 1, Term = 2, Index = noOp }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.AppliedIndex == noOp, "the no-op of term 2 did not apply");
        _ = driver.ExecuteAsync(Set(1, "a"));
        _ = driver.ExecuteAsync(Set(2, "b"));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 2, "the two writes were not appended");
        var (proposal, refusal, applied) = await driver.ProposeConfChangeAsync(new ConfChange(ConfChangeType.AddLearner, 6, "http://127.0.0.1:6"), _ => null).WaitAsync(Patience);
        Assert.Null(refusal);
        Assert.Equal(noOp + 3, proposal.Index);
        await DriverWaits.UntilAsync(driver, _ => node.Disk.LastIndex == noOp + 3, "the change was not persisted");
        var proposed = await CopyEntriesAsync(node, noOp + 1, noOp + 4);

        Assert.True(node.Inbox.TryPost(new Message
        {
            Type = MessageType.Append, From = 2, To = 1, Term = 3, Index = noOp, LogTerm = 2,
            Entries = [new Entry(noOp + 1, 3, EntryType.Normal, ReadOnlyMemory<byte>.Empty)],
        }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 1 && raft.Term == 3, "node 1 did not take node 2's entry");

        await node.LeadWithVotesAsync(term: 4, [4UL, 5UL]);
        var fourth = driver.ExecuteAsync(Set(4, "d"));
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 3, "the write of term 4 was not appended");
        await driver.RunOnLoopAsync(_ => true).WaitAsync(Patience);
        Assert.False(applied!.IsCompleted, "the change was answered before anything committed at its index");

        Assert.True(node.Inbox.TryPost(new Message
        {
            Type = MessageType.Append, From = 3, To = 1, Term = 5, Index = noOp, LogTerm = 2, Commit = noOp + 4,
            Entries = [.. proposed, new Entry(noOp + 4, 5, EntryType.Normal, ReadOnlyMemory<byte>.Empty)],
        }, 0));
        await DriverWaits.UntilAsync(driver, raft => raft.AppliedIndex == noOp + 4, "node 1 did not apply node 3's entries");

        Assert.True(await Task.WhenAny(applied, Task.Delay(Patience)) == applied, "the membership change never completed");
        Assert.True(await applied);
        await AssertAnsweredNotAppliedAsync((fourth, "fourth"));
    }

    private static Task<Entry[]> CopyEntriesAsync(PeerlessNode node, ulong from, ulong until) =>
        node.Driver.RunOnLoopAsync(_ =>
        {
            var entries = new List<Entry>();
            Assert.Equal(LogReadStatus.Ok, node.Disk.TryGetEntries(from, until, ulong.MaxValue, entries));
            return entries.Select(entry => entry with { Data = entry.Data.ToArray() }).ToArray();
        }).WaitAsync(Patience);

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
