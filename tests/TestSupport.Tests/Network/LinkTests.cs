using Dcache.TestSupport.Network;

namespace Dcache.TestSupport.Tests.Network;

/// <summary>A link two overlapping faults cut stays cut until both healed; the final heal ends every cut.</summary>
public sealed class LinkTests
{
    [Fact]
    public void ALinkCutByTwoFaultsHealsWhenTheSecondReleasesIt()
    {
        var link = new Link();
        link.Cut();
        link.Cut();

        link.Release();
        Assert.True(link.IsCut);
        link.Release();
        Assert.False(link.IsCut);

        // A release of a link no fault holds changes nothing (a heal after the final heal-all, say).
        link.Release();
        Assert.False(link.IsCut);
        link.Cut();
        Assert.True(link.IsCut);
    }

    [Fact]
    public void HealingEverythingEndsEveryFaultsCut()
    {
        var link = new Link();
        link.Cut();
        link.Cut();

        link.Heal();
        Assert.False(link.IsCut);
        link.Release();
        link.Cut();
        link.Release();
        Assert.False(link.IsCut);
    }

    [Fact]
    public async Task AStalledLinkHoldsItsBytesAndClosesNothingUntilItResumes()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var link = new Link();
        await using var proxy = new LinkProxy(from: 0, to: 1, ((System.Net.IPEndPoint)listener.LocalEndpoint).Port, own: link);
        using var client = new System.Net.Sockets.TcpClient();
        await client.ConnectAsync(System.Net.IPAddress.Loopback, proxy.Port);
        using var server = await listener.AcceptTcpClientAsync();
        var toServer = client.GetStream();
        var atServer = server.GetStream();
        var buffer = new byte[16];

        await toServer.WriteAsync("before"u8.ToArray());
        await ReadExactlyAsync(atServer, buffer, 6);
        Assert.Equal("before", System.Text.Encoding.ASCII.GetString(buffer, 0, 6));

        proxy.Stall();
        await toServer.WriteAsync("held"u8.ToArray());
        var read = ReadExactlyAsync(atServer, buffer, 4);
        // A stall has no end of its own to wait for: what it must not do is let the bytes through in the meantime.
        await Task.Delay(300);
        Assert.False(read.IsCompleted, "bytes passed a stalled link");

        // A connection opened during the stall reaches the server only when it ends.
        using var late = new System.Net.Sockets.TcpClient();
        await late.ConnectAsync(System.Net.IPAddress.Loopback, proxy.Port);
        var lateAccepted = listener.AcceptTcpClientAsync();
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            while (link.Connections < 2)
            {
                await Task.Delay(10, deadline.Token);
            }
        }

        await Task.Delay(300);
        Assert.False(lateAccepted.IsCompleted, "a connection opened during a stall reached the server");

        proxy.Resume();
        await read.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("held", System.Text.Encoding.ASCII.GetString(buffer, 0, 4));
        using var lateAtServer = await lateAccepted.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(client.Connected);
    }

    private static async Task ReadExactlyAsync(System.Net.Sockets.NetworkStream stream, byte[] buffer, int count) =>
        await stream.ReadExactlyAsync(buffer.AsMemory(0, count)).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
}
