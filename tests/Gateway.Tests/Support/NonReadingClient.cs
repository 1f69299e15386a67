using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Dcache.Gateway.Tests.Support;

/// <summary>
/// A real socket client that pipelines many GETs and then reads none of the replies: what a client that stopped
/// reading looks like to the gateway.
/// </summary>
internal static class NonReadingClient
{
    /// <summary>
    /// Connects (with a small receive buffer, so the kernel takes in little), waits until the gateway has taken the
    /// connection in and counts it, then sends <paramref name="gets"/> GETs of <paramref name="key"/> and returns
    /// without reading. Counting first matters: a test that waits for the gateway to let go of the client would
    /// otherwise pass at once, before the gateway had even seen it.
    /// </summary>
    public static async Task<TcpClient> OpenAsync(KestrelGateway gateway, string key, int gets, TimeSpan patience)
    {
        var client = new TcpClient { ReceiveBufferSize = 16 * 1024 };
        try
        {
            await client.ConnectAsync(IPAddress.Loopback, gateway.Port);
            var stream = client.GetStream();
            await stream.WriteAsync(TestConnection.Encode("PING"));
            var pong = new byte["+PONG\r\n".Length];
            await stream.ReadExactlyAsync(pong).AsTask().WaitAsync(patience);
            Assert.Equal("+PONG\r\n", Encoding.ASCII.GetString(pong));
            Assert.Equal(1, gateway.Clients.ConnectedClients);

            await stream.WriteAsync(Enumerable.Range(0, gets).SelectMany(_ => TestConnection.Encode("GET", key)).ToArray());
            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }
}
