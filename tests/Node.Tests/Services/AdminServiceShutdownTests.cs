using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Services;
using Dcache.Node.Transport;
using Dcache.Node.Tests.Consensus;
using Dcache.Node.Tests.Transport;
using Dcache.Protocol;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
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
        var credentials = new ClusterCredentials("test", "secret");
        var builder = GrpcTestServer.CreateBuilder();
        builder.Services.AddSingleton(node.Driver);
        builder.Services.AddSingleton(new AddressBook(new Dictionary<ulong, string>()));
        builder.Services.AddSingleton(new NodeOptions());
        builder.Services.AddSingleton(credentials);
        // The node's own interceptors, as its Program registers them.
        builder.Services.AddSingleton<ClusterAuthInterceptor>();
        builder.Services.AddGrpc(grpc =>
        {
            grpc.Interceptors.Add<ClusterAuthInterceptor>();
            grpc.Interceptors.Add<NodeStoppedInterceptor>();
        });
        await using var app = builder.Build();
        app.MapGrpcService<AdminService>();
        await app.StartAsync();
        try
        {
            using var channel = GrpcChannels.ForNode($"http://127.0.0.1:{GrpcTestServer.PortOf(app)}");
            var admin = new Proto.Admin.AdminClient(channel);

            await node.Driver.DisposeAsync();

            var refused = await Assert.ThrowsAsync<RpcException>(() => admin.MemberAddAsync(
                new Proto.MemberAddRequest { Id = 4, Address = "http://127.0.0.1:7004" }, credentials.ToHeaders(), DateTime.UtcNow.AddSeconds(30)).ResponseAsync);
            Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
            Assert.Equal("the node is shutting down", refused.Status.Detail);

            refused = await Assert.ThrowsAsync<RpcException>(() => admin.MemberListAsync(
                new Proto.MemberListRequest(), credentials.ToHeaders(), DateTime.UtcNow.AddSeconds(30)).ResponseAsync);
            Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
        }
        finally
        {
            await app.StopAsync();
        }
    }
}
