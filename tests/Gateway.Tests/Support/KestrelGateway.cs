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

    /// <param name="firstReadBytes">
    /// When above 0, each connection is served only once this many bytes from its client are in: the gateway's first read
    /// then holds them all, as one pipeline, however the transport happened to take them in (a few KB at a time, with
    /// the reader free to run between).
    /// </param>
    public static async Task<KestrelGateway> StartAsync(Action<RespOptions>? configure = null, ICacheCluster? over = null, int firstReadBytes = 0)
    {
        var cluster = over ?? new FakeCacheCluster { NowMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() };
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<ICacheCluster>(cluster);
        builder.Services.AddRespFrontEnd(configure);
        var accepted = new ConcurrentQueue<Socket>();
        builder.WebHost.ConfigureKestrel(kestrel =>
            kestrel.Listen(IPAddress.Loopback, 0, listen => listen
                .Use(next => async connection =>
                {
                    if (connection.Features.Get<IConnectionSocketFeature>()?.Socket is { } socket)
                    {
                        accepted.Enqueue(socket);
                    }

                    await BufferAsync(connection.Transport.Input, firstReadBytes);
                    await next(connection);
                })
                .UseConnectionHandler<RespConnectionHandler>()));
        var app = builder.Build();
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new KestrelGateway(app, cluster, new Uri(address).Port, accepted);
    }

    /// <summary>Waits until <paramref name="bytes"/> are buffered in <paramref name="input"/>, consuming none of them.</summary>
    private static async Task BufferAsync(System.IO.Pipelines.PipeReader input, int bytes)
    {
        while (bytes > 0)
        {
            var result = await input.ReadAsync();
            if (result.Buffer.Length >= bytes || result.IsCompleted)
            {
                // Nothing examined: the handler's first read returns all of it at once.
                input.AdvanceTo(result.Buffer.Start);
                return;
            }

            input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
