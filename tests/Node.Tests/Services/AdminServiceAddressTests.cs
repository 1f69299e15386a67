using Dcache.Node.Tests.Consensus;
using Dcache.Raft;
using Grpc.Core;
using Proto = Dcache.Protocol.Admin;

namespace Dcache.Node.Tests.Services;

/// <summary>
/// One address is one node: the node there refuses all traffic meant for another member, so `member add` and
/// `member update` refuse another member's address, however it is written. They compared the text: a learner could be
/// added at node 2's address in capitals, and node 2 then refused its traffic.
/// </summary>
public sealed class AdminServiceAddressTests
{
    private static readonly Dictionary<ulong, string> Peers = new()
    {
        [2] = "http://localhost:7002",
        [3] = "http://127.0.0.1", // port 80, not written
    };

    [Theory]
    [InlineData("http://LOCALHOST:7002", 2)]
    [InlineData("HTTP://localhost:7002", 2)]
    [InlineData("http://localhost:7002/raft", 2)]
    [InlineData("http://127.0.0.1:80", 3)]
    [InlineData("http://127.0.0.1:80/", 3)]
    [InlineData("http://someone@localhost:7002", 2)]
    public async Task Adding_a_member_at_another_members_address_written_differently_is_refused(string address, ulong owner)
    {
        await using var node = await PeerlessNode.StartLeadingAsync(Peers);
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);

        var refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberAddAsync(
            new Proto.MemberAddRequest { Id = 4, Address = address }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        Assert.Equal(StatusCode.AlreadyExists, refused.StatusCode);
        Assert.EndsWith($"already belongs to node {owner}", refused.Status.Detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://10.0.0.4")]
    [InlineData("http://10.0.0.4/")]
    [InlineData("http://[::1]")]
    public async Task Adding_a_member_at_an_address_without_a_port_is_refused_as_port_80_is_no_nodes_port(string address)
    {
        await using var node = await PeerlessNode.StartLeadingAsync(Peers);
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);

        var refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberAddAsync(
            new Proto.MemberAddRequest { Id = 4, Address = address }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Contains("names no port", refused.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Moving_a_member_to_another_members_address_written_differently_is_refused_and_its_own_is_not()
    {
        await using var node = await PeerlessNode.StartLeadingAsync(Peers);
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);

        var refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberUpdateAsync(
            new Proto.MemberUpdateRequest { Id = 3, Address = "http://LocalHost:7002/" }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        Assert.Equal(StatusCode.AlreadyExists, refused.StatusCode);
        Assert.EndsWith("already belongs to node 2", refused.Status.Detail, StringComparison.Ordinal);

        // Node 3's own address, written differently, is no other member's: the update goes on to probe it, and fails
        // there (no node 3 listens on port 80; whatever may, is not it).
        refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberUpdateAsync(
            new Proto.MemberUpdateRequest { Id = 3, Address = "http://127.0.0.1:80" }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        Assert.NotEqual(StatusCode.AlreadyExists, refused.StatusCode);
        Assert.Contains("node 3", refused.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Adding_a_member_where_the_log_records_another_member_is_refused_though_this_node_dials_it_elsewhere()
    {
        // This node's configuration lists node 2 at a proxy; the log records node 2 where it listens.
        await using var node = await PeerlessNode.StartLeadingAsync(Peers, recordedAddresses: new Dictionary<ulong, string> { [2] = "http://127.0.0.1:7102" });
        await using var server = await AdminTestServer.StartAsync(node.Driver, node.Addresses);
        Assert.Equal("http://localhost:7002", node.Addresses.Find(2));

        var refused = await Assert.ThrowsAsync<RpcException>(() => server.Client.MemberAddAsync(
            new Proto.MemberAddRequest { Id = 4, Address = "http://127.0.0.1:7102" }, server.Credentials.ToHeaders(), AdminTestServer.Deadline).ResponseAsync);
        Assert.Equal(StatusCode.AlreadyExists, refused.StatusCode);
        Assert.EndsWith("already belongs to node 2", refused.Status.Detail, StringComparison.Ordinal);
    }
}
