using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Services;
using Dcache.Node.Transport;
using Dcache.Node.Tests.Transport;
using Dcache.Protocol;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Proto = Dcache.Protocol.Admin;

namespace Dcache.Node.Tests.Services;

/// <summary>
/// The admin service of one driver on an ephemeral port, with the node's own interceptors as its Program registers
/// them, and a client that sends the cluster's credentials.
/// </summary>
internal sealed class AdminTestServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly GrpcChannel _channel;

    private AdminTestServer(WebApplication app, GrpcChannel channel, ClusterCredentials credentials)
    {
        _app = app;
        _channel = channel;
        Credentials = credentials;
        Client = new Proto.Admin.AdminClient(channel);
    }

    public Proto.Admin.AdminClient Client { get; }

    public ClusterCredentials Credentials { get; }

    public static async Task<AdminTestServer> StartAsync(RaftDriver driver, AddressBook addresses)
    {
        var credentials = new ClusterCredentials("test", "secret");
        var builder = GrpcTestServer.CreateBuilder();
        builder.Services.AddSingleton(driver);
        builder.Services.AddSingleton(addresses);
        builder.Services.AddSingleton(new NodeOptions());
        builder.Services.AddSingleton(credentials);
        builder.Services.AddSingleton<ClusterAuthInterceptor>();
        builder.Services.AddGrpc(grpc =>
        {
            grpc.Interceptors.Add<ClusterAuthInterceptor>();
            grpc.Interceptors.Add<NodeStoppedInterceptor>();
        });
        var app = builder.Build();
        app.MapGrpcService<AdminService>();
        try
        {
            await app.StartAsync();
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }

        return new AdminTestServer(app, GrpcChannels.ForNode($"http://127.0.0.1:{GrpcTestServer.PortOf(app)}"), credentials);
    }

    /// <summary>A deadline for one call: far enough that only a hang reaches it.</summary>
    public static DateTime Deadline => DateTime.UtcNow.AddSeconds(30);

    public async ValueTask DisposeAsync()
    {
        _channel.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
