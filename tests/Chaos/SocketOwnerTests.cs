using System.Net;
using System.Net.Sockets;
using Dcache.Integration.Tests.Support;

namespace Dcache.Chaos;

/// <summary>The proxies tell the gateway's connections from the nodes' by the process that holds the connecting socket.</summary>
public sealed class SocketOwnerTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)] // dual mode, as .NET's HTTP client connects: listed in /proc/net/tcp6 with a v4-mapped address
    public async Task AConnectionIsOwnedByTheProcessThatOpenedItAndByNoOther(bool dualMode)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var listenerPort = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var client = dualMode
            ? new Socket(SocketType.Stream, ProtocolType.Tcp) { DualMode = true }
            : new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(IPAddress.Loopback, listenerPort);
        using var accepted = await listener.AcceptSocketAsync();
        var clientPort = ((IPEndPoint)accepted.RemoteEndPoint!).Port;

        Assert.True(SocketOwner.Opened(Environment.ProcessId, clientPort, listenerPort));
        Assert.False(SocketOwner.Opened(1, clientPort, listenerPort)); // init holds no socket of ours
        Assert.False(SocketOwner.Opened(Environment.ProcessId, clientPort, listenerPort + 1 == 65536 ? 1 : listenerPort + 1));
    }
}
