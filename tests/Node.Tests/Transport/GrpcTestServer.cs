using System.Net;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Dcache.Node.Tests.Transport;

/// <summary>An in-process server for the node's gRPC services: h2c on an ephemeral 127.0.0.1 port, no log output.</summary>
internal static class GrpcTestServer
{
    public static WebApplicationBuilder CreateBuilder()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http2));
        return builder;
    }

    /// <summary>
    /// Starts <see cref="RaftTransportService"/> alone over <paramref name="inbox"/>, behind the interceptors the node
    /// puts before it (the cluster credentials check, the stopped-node mapping); <paramref name="logs"/> hears its logs.
    /// </summary>
    public static async Task<WebApplication> StartRaftTransportAsync(IRaftInbox inbox, ClusterCredentials credentials, ILoggerProvider? logs = null)
    {
        var builder = CreateBuilder();
        if (logs is not null)
        {
            builder.Logging.AddProvider(logs);
        }

        builder.Services.AddSingleton(inbox);
        builder.Services.AddSingleton(credentials);
        builder.Services.AddSingleton<ClusterAuthInterceptor>();
        builder.Services.AddGrpc(grpc =>
        {
            grpc.Interceptors.Add<ClusterAuthInterceptor>();
            grpc.Interceptors.Add<Dcache.Node.Services.NodeStoppedInterceptor>();
        });
        var app = builder.Build();
        app.MapGrpcService<RaftTransportService>();
        await app.StartAsync();
        return app;
    }

    /// <summary>The port a started server listens on.</summary>
    public static int PortOf(WebApplication app) =>
        new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single()).Port;
}

/// <summary>
/// A Raft inbox that takes every message and every snapshot, and closes when <paramref name="closing"/> is cancelled:
/// <see cref="RaftTransportService"/> on its own, without a driver.
/// </summary>
internal sealed class AcceptingInbox(ulong nodeId, CancellationToken closing = default) : IRaftInbox, IIncomingSnapshot
{
    private readonly TaskCompletionSource _firstChunk = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completed once a snapshot's first chunk has arrived.</summary>
    public Task FirstChunk => _firstChunk.Task;

    /// <summary>Whether the snapshot being received was let go of.</summary>
    public bool Disposed { get; private set; }

    public ulong NodeId => nodeId;

    public CancellationToken Closing => closing;

    public bool WasRemoved(ulong peer) => false;

    public void PeerAddressHeard(ulong peer, string address)
    {
    }

    public void PeerEntryFormatHeard(ulong peer, byte format)
    {
    }

    public void PeerClockHeard(ulong peer, long readingMs, long echoMs, long echoHeldMs, long? clusterOffsetMs)
    {
    }

    private int _posted;

    /// <summary>Messages handed to this node so far.</summary>
    public int Posted => Volatile.Read(ref _posted);

    public bool TryPost(Message message, long readTimeMs = 0)
    {
        Interlocked.Increment(ref _posted);
        return true;
    }

    /// <summary>Thrown by <see cref="BeginSnapshot"/> when set (a snapshot store that refuses to begin one).</summary>
    public Exception? RefuseSnapshotsWith { get; set; }

    public IIncomingSnapshot BeginSnapshot(ulong peer, Message message) => RefuseSnapshotsWith is { } refusal ? throw refusal : this;

    public ValueTask WriteAsync(ReadOnlyMemory<byte> chunk, CancellationToken cancellationToken)
    {
        _firstChunk.TrySetResult();
        return ValueTask.CompletedTask;
    }

    /// <summary>When set, a snapshot's data fails its check at the end (a snapshot damaged on the way).</summary>
    public bool FailChecksums { get; set; }

    public ValueTask CompleteAsync(ulong checksum, CancellationToken cancellationToken) =>
        FailChecksums ? ValueTask.FromException(new InvalidDataException($"the data does not match checksum {checksum:x8}")) : ValueTask.CompletedTask;

    public ValueTask DisposeAsync()
    {
        Disposed = true;
        return ValueTask.CompletedTask;
    }
}
