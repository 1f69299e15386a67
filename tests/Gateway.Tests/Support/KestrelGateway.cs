using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Dcache.Gateway.Cluster;
using Dcache.Gateway.Resp;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Dcache.Gateway.Tests.Support;

/// <summary>
/// The front end on a real Kestrel socket (127.0.0.1, ephemeral port) over the in-memory cluster (or a cluster client
/// the test gives): what real clients see of the RESP layer, without nodes.
/// </summary>
internal sealed class KestrelGateway : IAsyncDisposable
{
    private readonly WebApplication _app;

    private readonly ICacheCluster _cluster;

    private KestrelGateway(WebApplication app, ICacheCluster cluster, int port, ConcurrentQueue<Socket> accepted)
    {
        _app = app;
        _cluster = cluster;
        Port = port;
        AcceptedSockets = accepted;
    }

    /// <summary>The server side of each accepted connection, in the order accepted: the socket the handler is given.</summary>
    public IReadOnlyCollection<Socket> AcceptedSockets { get; }

    /// <summary>The in-memory cluster (not when the test gave its own).</summary>
    public FakeCacheCluster Cluster => (FakeCacheCluster)_cluster;

    public int Port { get; }

    public RespClientRegistry Clients => _app.Services.GetRequiredService<RespClientRegistry>();

    public string Endpoint => $"127.0.0.1:{Port}";

    public static async Task<KestrelGateway> StartAsync(Action<RespOptions>? configure = null, ICacheCluster? over = null)
    {
        var cluster = over ?? new FakeCacheCluster { NowMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() };
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<ICacheCluster>(cluster);
        builder.Services.AddRespFrontEnd(configure);
        var accepted = new ConcurrentQueue<Socket>();
        builder.WebHost.ConfigureKestrel(kestrel =>
            kestrel.Listen(IPAddress.Loopback, 0, listen => listen
                .Use(next => connection =>
                {
                    if (connection.Features.Get<IConnectionSocketFeature>()?.Socket is { } socket)
                    {
                        accepted.Enqueue(socket);
                    }

                    return next(connection);
                })
                .UseConnectionHandler<RespConnectionHandler>()));
        var app = builder.Build();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new KestrelGateway(app, cluster, new Uri(address).Port, accepted);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
