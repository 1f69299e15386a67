using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A command the node cannot carry out is answered with what its sender may do next: a read that cannot be served
/// fails at once (retry elsewhere, nothing happened), and a write proposed but not seen applied by its deadline is
/// answered as possibly applied (never as "not applied", which a client may take as leave to give up on it).
/// </summary>
public sealed class UnansweredRequestTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_linearizable_read_on_a_node_that_knows_no_leader_fails_at_once_rather_than_at_its_deadline()
    {
        // The core drops a read index it cannot ask anyone for; the read waits a minute otherwise (its request timeout here).
        await using var node = PeerlessNode.Start();

        var reply = await node.Driver.ExecuteAsync(Get(id: 3, "k")).WaitAsync(Patience);

        Assert.True(reply.Failure is { Kind: Proto.FailureKind.Unavailable }, $"reply: {reply}");
        Assert.Equal(3UL, reply.Id);
        Assert.Contains("leadership changed", reply.Failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_read_waiting_for_its_leaders_read_index_fails_at_once_when_the_leader_changes()
    {
        await using var node = PeerlessNode.Start();
        await node.FollowAsync(leader: 2, term: 1);
        var read = node.Driver.ExecuteAsync(Get(id: 4, "k"));
        await DriverWaits.UntilAsync(node.Driver, raft => raft.ForwardedReadCount == 1, "the read's index was never asked of the leader");

        // Node 3 leads a later term: node 2's answer, if it ever comes, no longer counts.
        await node.FollowAsync(leader: 3, term: 2);

        var reply = await read.WaitAsync(Patience);
        Assert.True(reply.Failure is { Kind: Proto.FailureKind.Unavailable }, $"reply: {reply}");
        Assert.Contains("leadership changed", reply.Failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_write_not_seen_applied_by_its_deadline_is_answered_as_of_unknown_outcome()
    {
        // Node 1 leads, but no follower acknowledges its entries: the write is in its log and may yet commit.
        await using var node = PeerlessNode.Start(requestTimeout: TimeSpan.FromMilliseconds(300));
        await node.LeadAsync(term: 2, voter: 2);

        var reply = await node.Driver.ExecuteAsync(new Proto.Command
        {
            Id = 5,
            Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("k"), Value = ByteString.CopyFromUtf8("v") },
        }).WaitAsync(Patience);

        Assert.True(reply.Failure is { Kind: Proto.FailureKind.OutcomeUnknown }, $"reply: {reply}");
        Assert.Equal(5UL, reply.Id);
        Assert.Contains("it may still apply", reply.Failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_node_that_is_not_a_member_serves_no_read_and_takes_no_write()
    {
        // Removed (or not yet added): its state and its leader are not the cluster's, not even for a LOCAL read.
        await using var node = PeerlessNode.Start(voters: [2UL, 3UL]);

        var local = Get(id: 7, "k");
        local.Consistency = Proto.ReadConsistency.Local;
        var write = new Proto.Command { Id = 8, Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("k"), Value = ByteString.CopyFromUtf8("v") } };
        foreach (var command in new[] { local, write })
        {
            var reply = await node.Driver.ExecuteAsync(command).WaitAsync(Patience);
            Assert.True(reply.Failure is { Kind: Proto.FailureKind.Unavailable, LeaderId: 0 }, $"reply: {reply}");
            Assert.Contains("node 1 is not a member of the cluster", reply.Failure.Message, StringComparison.Ordinal);
        }
    }

    private static Proto.Command Get(ulong id, string key) => new()
    {
        Id = id,
        Consistency = Proto.ReadConsistency.Linearizable,
        Get = new Proto.GetRequest { Key = ByteString.CopyFromUtf8(key) },
    };
}
