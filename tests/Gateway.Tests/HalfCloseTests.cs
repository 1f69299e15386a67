using System.Net;
using System.Net.Sockets;
using System.Text;
using Dcache.Gateway.Tests.Support;

namespace Dcache.Gateway.Tests;

/// <summary>
/// A client that sends its commands and then shuts down its sending side (`printf 'SET k v\r\n' | nc -N`, a script
/// writing to /dev/tcp) has them run and answered, as Redis does.
/// </summary>
public sealed class HalfCloseTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task CommandsSentBeforeTheClientShutsDownItsSideAreRunAndAnswered()
    {
        await using var gateway = await KestrelGateway.StartAsync();
        gateway.Cluster.Hold();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, gateway.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes("SET k v\r\nGET k\r\n"));
        await gateway.Cluster.WaitForInFlightAsync(1, Patience);
        socket.Shutdown(SocketShutdown.Send);

        // The gateway reads the FIN while the write waits for the cluster. Before, that cancelled the write (its
        // call given up, the client answered "outcome unknown"): give it the time to, then let the cluster answer.
        var giveUp = DateTime.UtcNow + TimeSpan.FromSeconds(1);
        while (Volatile.Read(ref gateway.Cluster.InFlight) > 0 && DateTime.UtcNow < giveUp)
        {
            await Task.Delay(20);
        }

        gateway.Cluster.Release();
        var received = new MemoryStream();
        var buffer = new byte[1024];
        using var timeout = new CancellationTokenSource(Patience);
        int read;
        while ((read = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0)
        {
            received.Write(buffer, 0, read);
        }

        Assert.Equal("+OK\r\n$1\r\nv\r\n", Encoding.ASCII.GetString(received.ToArray()));
        Assert.Contains(gateway.Cluster.Executed, e => e.Command.Set?.Key.ToStringUtf8() == "k");
    }
}
