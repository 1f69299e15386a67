using System.Diagnostics;
using System.Net.Sockets;
using Dcache.Gateway.Tests.Support;

namespace Dcache.Gateway.Tests;

/// <summary>Redis's tcp-keepalive and timeout: clients that vanished or went idle do not hold their slot for ever.</summary>
public sealed class ClientTimeoutTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    [Theory]
    [InlineData(300, 100)] // Redis's default
    [InlineData(7, 2)]
    [InlineData(2, 1)] // the interval is never 0
    public async Task AcceptedSocketsProbeTheirClientAsRedisDoes(int keepAliveSeconds, int intervalSeconds)
    {
        await using var gateway = await KestrelGateway.StartAsync(o => o.TcpKeepAliveSeconds = keepAliveSeconds);
        using var client = await GatewayConnection.OpenAsync(gateway.Port, CancellationToken.None);
        // Answered, so the handler has taken the connection (and set its socket up) by now.
        Assert.Equal("+PONG", (await client.CommandAsync(Patience, "PING")).ToString());

        var socket = Assert.Single(gateway.AcceptedSockets);
        Assert.NotEqual(0, (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive)!);
        Assert.Equal(keepAliveSeconds, (int)socket.GetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime)!);
        Assert.Equal(intervalSeconds, (int)socket.GetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval)!);
        Assert.Equal(3, (int)socket.GetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount)!);
    }

    [Fact]
    public async Task NoKeepAliveWhenItIsOff()
    {
        await using var gateway = await KestrelGateway.StartAsync(o => o.TcpKeepAliveSeconds = 0);
        using var client = await GatewayConnection.OpenAsync(gateway.Port, CancellationToken.None);
        Assert.Equal("+PONG", (await client.CommandAsync(Patience, "PING")).ToString());
        Assert.Equal(0, (int)Assert.Single(gateway.AcceptedSockets).GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive)!);
    }

    [Fact]
    public async Task AnIdleClientIsClosedAfterTheTimeoutWhileBusySubscribedAndWaitingOnesStay()
    {
        // Two seconds, and a busy client's command every twentieth of that: a loaded machine that delays the busy
        // client's loop by most of a second must not make it look idle.
        const int idleTimeoutSeconds = 2;
        await using var gateway = await KestrelGateway.StartAsync(o => o.IdleTimeoutSeconds = idleTimeoutSeconds);

        // Waiting for the cluster's reply for longer than the timeout is not idle.
        using var waiting = await GatewayConnection.OpenAsync(gateway.Port, CancellationToken.None);
        gateway.Cluster.Hold();
        var held = waiting.CommandAsync(Patience * 2, "GET", "k");
        await gateway.Cluster.WaitForInFlightAsync(1, Patience);

        // Subscribed: never timed out, as in Redis.
        using var subscribed = await GatewayConnection.OpenAsync(gateway.Port, CancellationToken.None);
        Assert.Equal("*[$subscribe, $news, :1]", (await subscribed.CommandAsync(Patience, "SUBSCRIBE", "news")).ToString());

        // Busy: a command every twentieth of the timeout.
        using var busy = await GatewayConnection.OpenAsync(gateway.Port, CancellationToken.None);
        using var stopBusy = new CancellationTokenSource();
        var pinging = Task.Run(async () =>
        {
            for (var i = 0; i < 500 && !stopBusy.IsCancellationRequested; i++)
            {
                Assert.Equal("+PONG", (await busy.CommandAsync(Patience, "PING")).ToString());
                await Task.Delay(TimeSpan.FromSeconds(idleTimeoutSeconds) / 20);
            }
        });

        // Idle since its last reply: closed once the timeout has passed, not before. Timed from before the command, so
        // that the time measured is never shorter than the gateway's wait (which starts once it has replied): started on
        // the reply's arrival, a test thread slow to take the reply in shortened it by as much.
        using var idle = await GatewayConnection.OpenAsync(gateway.Port, CancellationToken.None);
        var clock = Stopwatch.StartNew();
        Assert.Equal("+PONG", (await idle.CommandAsync(Patience, "PING")).ToString());
        Assert.True(await idle.WaitForCloseAsync(Patience), "the idle client was not closed");
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(idleTimeoutSeconds) - TimeSpan.FromMilliseconds(50), Patience);

        // Every other client has been waiting, subscribed or busy for longer than the timeout by now.
        await stopBusy.CancelAsync();
        await pinging;
        Assert.Equal("+PONG", (await busy.CommandAsync(Patience, "PING")).ToString());
        Assert.Equal("*[$pong, $]", (await subscribed.CommandAsync(Patience, "PING")).ToString());
        gateway.Cluster.Release();
        Assert.Equal("$nil", (await held).ToString());
        Assert.Equal(3, gateway.Clients.ConnectedClients);
    }

    [Fact]
    public async Task AClientThatStopsTakingItsRepliesIsClosedAfterTheTimeoutBelowTheOutputBufferLimit()
    {
        const int idleTimeoutSeconds = 1;
        // The output buffer limit (512 MiB by default) is far off: only the timeout can close this client.
        await using var gateway = await KestrelGateway.StartAsync(o => o.IdleTimeoutSeconds = idleTimeoutSeconds);
        gateway.Cluster.Put("v", new string('x', 100_000));

        // 30 MB of replies, far past what the kernel's socket buffers and Kestrel's take in, to a client that reads none.
        var clock = Stopwatch.StartNew();
        using var client = await NonReadingClient.OpenAsync(gateway, "v", gets: 300, Patience);

        var deadline = clock.Elapsed + Patience;
        while (gateway.Clients.ConnectedClients > 0)
        {
            Assert.True(clock.Elapsed < deadline, "the gateway kept a client that took none of its replies past the idle timeout");
            await Task.Delay(20);
        }

        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(idleTimeoutSeconds) - TimeSpan.FromMilliseconds(50), deadline);
    }
}
