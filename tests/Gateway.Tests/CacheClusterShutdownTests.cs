using System.Net;
using System.Net.Sockets;
using Dcache.Gateway.Cluster;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Dcache.Gateway.Tests;

/// <summary>The gateway's cluster client stops cleanly whatever its calls to the nodes are doing at that moment.</summary>
public sealed class CacheClusterShutdownTests
{
    [Fact]
    public async Task DisposingWhileAStatusPollIsInFlightDoesNotThrow()
    {
        // A node that takes the connection and never answers: the first status poll stays in flight until cancelled.
        using var silentNode = new TcpListener(IPAddress.Loopback, 0);
        silentNode.Start();
        var address = $"http://127.0.0.1:{((IPEndPoint)silentNode.LocalEndpoint).Port}";
        var cluster = new CacheCluster(
            Options.Create(new ClusterOptions { Nodes = address, ClusterSecret = "secret" }),
            NullLogger<CacheCluster>.Instance);

        using var accepted = await silentNode.AcceptSocketAsync().WaitAsync(TimeSpan.FromSeconds(30));

        // Before the fix, the cancelled poll surfaced as an RpcException (Cancelled) out of DisposeAsync, which
        // crashed the gateway process on SIGTERM (exit code 134).
        await cluster.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
    }
}
