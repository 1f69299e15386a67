using Dcache.Gateway.Tests.Support;
using Dcache.Node.Tests.Consensus;
using Dcache.Raft;
using Google.Protobuf;
using Grpc.Core;
using CacheProto = Dcache.Protocol.Cache;
using Proto = Dcache.Protocol.Admin;

namespace Dcache.Node.Tests.Services;

/// <summary>
/// The membership commands refuse, before anything is proposed, what would hurt the cluster: a removal that leaves too
/// few answering voters to commit, a promotion of a learner that has not caught up, a transfer to a node that cannot
/// lead, a move to an address where another node answers. Each refusal says why, in words an operator can act on; and
/// a change another leader's entry replaced is answered as not applied, never as done.
/// </summary>
public sealed class AdminServiceRefusalTests
{
    private static readonly Dictionary<ulong, string> Peers = new Dictionary<ulong, string> { [2] = "http://127.0.0.1:7002", [3] = "http://127.0.0.1:7003" };

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Removing_a_voter_that_leaves_fewer_answering_voters_than_a_quorum_is_refused()
    {
        // Node 2 answers the leader; node 3 never does. Without node 2, voters 1 and 3 could commit nothing.
        await using var node = await PeerlessNode.StartLeadingAsync(Peers);
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);

        // Right after taking over, the leader cannot tell yet (ABORTED, which dcachectl retries): so does this test.
        RpcException refused;
        var deadline = DateTime.UtcNow + Patience;
        do
        {
            refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberRemoveAsync(
                new Proto.MemberRemoveRequest { Id = 2 }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        }
        while (refused.StatusCode == StatusCode.Aborted && DateTime.UtcNow < deadline);

        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        Assert.Contains("would leave voters 1, 3, of which 3 did not answer", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Equal([1UL, 2UL, 3UL], await node.Driver.RunOnLoopAsync(raft => raft.Membership.Voters.ToList()).WaitAsync(Patience));
    }

    [Fact]
    public async Task Promoting_a_learner_that_holds_none_of_the_log_is_refused_as_not_caught_up()
    {
        await using var node = await LoneLeaderWithLearnerAsync();
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);

        var refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberPromoteAsync(
            new Proto.MemberPromoteRequest { Id = 2 }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);

        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        Assert.Contains("node 2 has not caught up: it has received none of the leader's log yet", refused.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Promoting_a_learner_further_behind_than_the_limit_is_refused_with_how_far_behind_it_is()
    {
        await using var node = await LoneLeaderWithLearnerAsync();
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);
        // More entries than the limit (1,000 by default), of which the learner acknowledges only the first.
        await Task.WhenAll(Enumerable.Range(1, 1_010).Select(i => node.Driver.ExecuteAsync(new CacheProto.Command
        {
            Id = (ulong)i,
            Set = new CacheProto.SetRequest { Key = ByteString.CopyFromUtf8($"k{i}"), Value = ByteString.CopyFromUtf8("v") },
        }))).WaitAsync(Patience);
        var term = await node.Driver.RunOnLoopAsync(raft => raft.Term).WaitAsync(Patience);
        Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 2, To = 1, Term = term, Index = 1 }, 0));
        await DriverWaits.UntilAsync(node.Driver, raft => raft.GetStatus().Progress.Any(p => p.Id == 2 && p.Match == 1), "the learner's acknowledgement was not taken");

        var refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberPromoteAsync(
            new Proto.MemberPromoteRequest { Id = 2 }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);

        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        Assert.Contains("node 2 has not caught up: it holds the log up to index 1 of the leader's", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("the limit is 1000", refused.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Handing_leadership_to_a_learner_or_to_a_node_that_is_no_member_is_refused_with_the_reason()
    {
        await using var node = await LoneLeaderWithLearnerAsync();
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);

        var learner = await Assert.ThrowsAsync<RpcException>(() => server.Client.LeaderTransferAsync(
            new Proto.LeaderTransferRequest { TargetId = 2 }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, learner.StatusCode);
        Assert.Contains("node 2 is a learner; only a voter can lead", learner.Status.Detail, StringComparison.Ordinal);

        var stranger = await Assert.ThrowsAsync<RpcException>(() => server.Client.LeaderTransferAsync(
            new Proto.LeaderTransferRequest { TargetId = 5 }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, stranger.StatusCode);
        Assert.Contains("node 5 is not a member", stranger.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Moving_a_member_to_an_address_where_another_node_answers_is_refused()
    {
        // The operator typed node 3's new address for node 2: node 2 would be dialled there, and node 3 refuse its traffic.
        await using var other = await ScriptedNode.StartAsync(_ => null, status: () => new CacheProto.NodeStatus { NodeId = 3, Role = "Follower" });
        await using var node = await PeerlessNode.StartLeadingAsync(Peers);
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);

        var refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberUpdateAsync(
            new Proto.MemberUpdateRequest { Id = 2, Address = other.Address }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);

        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Contains($"the node at {other.Address} is node 3, not node 2", refused.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_change_whose_index_another_leaders_entry_took_is_answered_not_applied()
    {
        // The operator may retry an ABORTED change; one reported done that never applied would be taken as in effect.
        await using var node = await PeerlessNode.StartLeadingAsync(Peers);
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);
        var noOp = await node.Driver.RunOnLoopAsync(raft => raft.LastIndex).WaitAsync(Patience);
        using var add = server.Client.MemberAddAsync(new Proto.MemberAddRequest { Id = 4, Address = "http://127.0.0.1:7004" }, server.Credentials.ToHeaders(), AdminTestServer.Deadline);
        await DriverWaits.UntilAsync(node.Driver, raft => raft.LastIndex == noOp + 1, "the change was not proposed");

        // Node 2, leading term 3, replaces it with an entry of its own and commits that.
        Assert.True(node.Inbox.TryPost(new Message
        {
            Type = MessageType.Append, From = 2, To = 1, Term = 3, Index = noOp, LogTerm = 2, Commit = noOp + 1,
            Entries = [new Entry(noOp + 1, 3, EntryType.Normal, ReadOnlyMemory<byte>.Empty)],
        }, 0));

        var refused = await Assert.ThrowsAsync<RpcException>(() => add.ResponseAsync);
        Assert.Equal(StatusCode.Aborted, refused.StatusCode);
        Assert.Contains($"another entry took index {noOp + 1}", refused.Status.Detail, StringComparison.Ordinal);
    }

    /// <summary>Node 1, the one voter (so it commits alone), leading, with node 2 added as a learner that never answers.</summary>
    private static async Task<PeerlessNode> LoneLeaderWithLearnerAsync()
    {
        var node = PeerlessNode.Start(voters: [1UL]);
        try
        {
            await DriverWaits.UntilAsync(node.Driver, raft => raft.Role == Role.Leader && raft.AppliedIndex == raft.LastIndex, "the lone voter did not lead");
            var change = new ConfChange(ConfChangeType.AddLearner, 2, "http://127.0.0.1:7002");
            var (_, refusal, applied) = await node.Driver.ProposeConfChangeAsync(change, _ => null).WaitAsync(Patience);
            Assert.Null(refusal);
            Assert.True(await applied!.WaitAsync(Patience));
            return node;
        }
        catch
        {
            await node.DisposeAsync();
            throw;
        }
    }
}
