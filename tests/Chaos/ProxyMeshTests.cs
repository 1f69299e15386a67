using System.Net;
using System.Net.Sockets;
using Dcache.Integration.Tests.Support;
using Xunit.Abstractions;

namespace Dcache.Chaos;

/// <summary>Where the mesh has nodes that join or move reach each other (no node process is started).</summary>
public sealed class ProxyMeshTests(ITestOutputHelper output)
{
    [Fact]
    public async Task AJoinerDefinedBeforeAMemberMovesListsThatMemberWhereItListensNow()
    {
        await using var cluster = new LocalCluster(output);
        await using var mesh = new ProxyMesh(cluster);
        // As the chaos run does: every joiner is defined when the run begins, and members move later.
        cluster.AddJoiningNode(4);
        mesh.AddJoiner(4);
        var moved = await cluster.MoveNodeAsync(1);
        var address = mesh.Move(1);

        var listed = cluster.InitialClusterAtStart(4).Split(',')
            .Select(entry => entry.Split('=', 2))
            .ToDictionary(pair => ulong.Parse(pair[0], System.Globalization.CultureInfo.InvariantCulture), pair => pair[1]);
        Assert.Equal([1UL, 2, 3], listed.Keys.Order().ToList());
        Assert.Equal(address, listed[1]);

        // And that address leads to the port node 1 now listens on.
        using var node1 = new TcpListener(IPAddress.Loopback, moved.GrpcPort);
        node1.Start();
        using var joiner = new TcpClient();
        await joiner.ConnectAsync(IPAddress.Loopback, new Uri(listed[1]).Port);
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        using var relayed = await node1.AcceptSocketAsync(deadline.Token);
        Assert.True(relayed.Connected);
    }
}
