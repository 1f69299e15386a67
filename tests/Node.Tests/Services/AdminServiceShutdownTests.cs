using Dcache.Node.Tests.Consensus;
using Dcache.Raft;
using Grpc.Core;
using Proto = Dcache.Protocol.Admin;

namespace Dcache.Node.Tests.Services;

public sealed class AdminServiceShutdownTests
{
    /// <summary>
    /// An operator's command that reaches a node whose Raft loop has stopped (it is shutting down) is told so, as
    /// UNAVAILABLE, which dcachectl takes for "try another node"; it was UNKNOWN "Exception was thrown by handler".
    /// </summary>
    [Fact]
    public async Task A_membership_command_to_a_stopping_node_is_unavailable_with_the_reason()
    {
        await using var node = PeerlessNode.Start();
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);

        await node.Driver.DisposeAsync();

        var refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberAddAsync(
            new Proto.MemberAddRequest { Id = 4, Address = "http://127.0.0.1:7004" }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
        Assert.Equal("the node is shutting down", refused.Status.Detail);

        refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberListAsync(
            new Proto.MemberListRequest(), server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
    }

    /// <summary>
    /// The leader stops in the very round that applies an operator's change: the change is made, so the answer is
    /// success with its index (no member list, which went with the loop). It was UNAVAILABLE "the node is shutting
    /// down", and dcachectl reported a failure of a change the cluster had made.
    /// </summary>
    [Fact]
    public async Task A_change_applied_as_its_node_stops_is_answered_as_applied()
    {
        await using var node = PeerlessNode.Start();
        var noOp = await node.LeadAsync(term: 2, voter: 2);
        Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 2, To = 1, Term = 2, Index = noOp }, 0));
        await DriverWaits.UntilAsync(node.Driver, raft => raft.AppliedIndex == noOp, "the no-op of term 2 did not apply");
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);

        // Raised on the loop as it applies the change: the stop begins before the change's caller is answered.
        Task? stopping = null;
        node.Addresses.Changed += addresses =>
        {
            if (addresses.ContainsKey(4) && stopping is null)
            {
                stopping = node.Driver.DisposeAsync().AsTask();
            }
        };

        var added = server.Client.MemberAddAsync(
            new Proto.MemberAddRequest { Id = 4, Address = "http://127.0.0.1:7004" }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync;
        await DriverWaits.UntilAsync(node.Driver, raft => raft.LastIndex == noOp + 1, "the change was not proposed");
        Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 2, To = 1, Term = 2, Index = noOp + 1 }, 0));

        var reply = await added.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(noOp + 1, reply.Index);
        Assert.Empty(reply.Members.Members);
        Assert.Equal(0UL, reply.Members.LeaderId);
        Assert.NotNull(stopping);
        await stopping.WaitAsync(TimeSpan.FromSeconds(60));
    }
}
