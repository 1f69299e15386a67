using System.Net;
using System.Net.Sockets;
using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Transport;

/// <summary>How a Raft peer link waits before it dials again.</summary>
public sealed class PeerTransportBackoffTests
{
    private const ulong Peer = 2;

    /// <summary>How long the broken peer keeps each connection open: the link's first waits are shorter.</summary>
    private static readonly TimeSpan HeldFor = TimeSpan.FromMilliseconds(100);

    /// <summary>How long the relay to a working peer keeps each connection: long enough for the peer's answer under load.</summary>
    private static readonly TimeSpan WorkingPeerHeldFor = TimeSpan.FromMilliseconds(500);

    /// <summary>An HTTP/2 SETTINGS frame with no settings: the server's half of the connection preface.</summary>
    private static readonly byte[] EmptySettingsFrame = [0, 0, 0, 4, 0, 0, 0, 0, 0];

    [Fact]
    public async Task APeerThatAcceptsConnectionsAndDropsThemIsDialledLessAndLessOften()
    {
        // The peer's port accepts every connection, answers the HTTP/2 greeting, holds it a moment and closes it, as a
        // process that is listening but broken (or a proxy with nothing behind it) does: each stream to it takes its
        // messages into the local socket buffer, and breaks.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepted = 0;
        using var stop = new CancellationTokenSource();
        var acceptor = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                using var socket = await listener.AcceptSocketAsync(stop.Token);
                Interlocked.Increment(ref accepted);
                await socket.SendAsync(EmptySettingsFrame, stop.Token);
                await Task.Delay(HeldFor, stop.Token);
            }
        });

        var events = new CountingEvents();
        await using (var transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion,
            new PeerClocks(TimeProvider.System), events, NullLogger<PeerTransport>.Instance))
        {
            transport.SetPeers(new Dictionary<ulong, string> { [Peer] = $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}" });

            // Heartbeats, as a leader sends them, until the link to the peer has broken seven times, with nothing from the
            // peer between them: each wait doubles from the first (20 ms) unless something restarts it.
            await SendHeartbeatsUntilSevenBreaksAsync(transport, events, TimeSpan.FromSeconds(30), () => $"{accepted} dials");

            // After the seventh break it waits 20 ms doubled six times, capped at 1 s (reading just as the seventh break is
            // counted may see the sixth's, 640 ms). Before, every write the socket buffered restarted the backoff: it stayed
            // at 20 ms, about 50 dials a second against a peer that never answered.
            Assert.True(transport.LastReconnectDelay(Peer) >= TimeSpan.FromMilliseconds(640),
                $"last reconnect delay {transport.LastReconnectDelay(Peer).TotalMilliseconds} ms after {accepted} dials, {events.Unreachable} breaks");
        }

        await stop.CancelAsync();
        await acceptor.ContinueWith(_ => { }, TaskScheduler.Default);
    }

    /// <summary>
    /// A real peer's transport service tells the sender it took the stream, so a link to a working node that keeps
    /// breaking (here a relay that cuts every connection after a moment) dials again at the shortest wait each time:
    /// without that header every break would count as one more against an absent peer, up to 1 s between dials.
    /// </summary>
    [Fact]
    public async Task ALinkToAWorkingPeerThatKeepsBreakingRedialsAtTheShortestWait()
    {
        var credentials = new ClusterCredentials("test", "secret");
        await using var app = await GrpcTestServer.StartRaftTransportAsync(new AcceptingInbox(Peer), credentials);

        using var relay = new TcpListener(IPAddress.Loopback, 0);
        relay.Start();
        var servicePort = GrpcTestServer.PortOf(app);
        using var stop = new CancellationTokenSource();
        var relaying = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                using var inbound = await relay.AcceptSocketAsync(stop.Token);
                using var outbound = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await outbound.ConnectAsync(IPAddress.Loopback, servicePort, stop.Token);
                using var held = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
                held.CancelAfter(WorkingPeerHeldFor);
                await Task.WhenAll(CopyAsync(inbound, outbound, held.Token), CopyAsync(outbound, inbound, held.Token));
            }
        });

        var events = new CountingEvents();
        try
        {
            await using var transport = new PeerTransport(1, "http://127.0.0.1:1", credentials, 1 << 20, CacheCommand.FormatVersion,
                new PeerClocks(TimeProvider.System), events, NullLogger<PeerTransport>.Instance);
            transport.SetPeers(new Dictionary<ulong, string> { [Peer] = $"http://127.0.0.1:{((IPEndPoint)relay.LocalEndpoint).Port}" });
            await SendHeartbeatsUntilSevenBreaksAsync(transport, events, TimeSpan.FromSeconds(60));

            Assert.True(transport.LastReconnectDelay(Peer) == TimeSpan.FromMilliseconds(20),
                $"last reconnect delay {transport.LastReconnectDelay(Peer).TotalMilliseconds} ms after {events.Unreachable} breaks of streams the peer took");
        }
        finally
        {
            await stop.CancelAsync();
            await relaying.ContinueWith(_ => { }, TaskScheduler.Default);
            await app.StopAsync();
        }
    }

    /// <summary>
    /// A node listening where this node believes its peer is, but another one (a wrong InitialCluster entry, a member
    /// that missed an address change): it takes each stream and refuses the first message as addressed to another node.
    /// That is no working link, so the sender backs off as from an absent peer (it redialled every 20 ms).
    /// </summary>
    [Fact]
    public async Task APeerThatRefusesTheFirstMessageAsMisaddressedIsDialledLessAndLessOften()
    {
        var credentials = new ClusterCredentials("test", "secret");
        await using var app = await GrpcTestServer.StartRaftTransportAsync(new AcceptingInbox(Peer + 1), credentials);
        try
        {
            var events = new CountingEvents();
            var warnings = new WarningLog();
            await using var transport = new PeerTransport(1, "http://127.0.0.1:1", credentials, 1 << 20, CacheCommand.FormatVersion,
                new PeerClocks(TimeProvider.System), events, warnings);
            transport.SetPeers(new Dictionary<ulong, string> { [Peer] = $"http://127.0.0.1:{GrpcTestServer.PortOf(app)}" });
            await SendHeartbeatsUntilSevenBreaksAsync(transport, events, TimeSpan.FromSeconds(30));

            Assert.True(transport.LastReconnectDelay(Peer) >= TimeSpan.FromMilliseconds(640),
                $"last reconnect delay {transport.LastReconnectDelay(Peer).TotalMilliseconds} ms after {events.Unreachable} refused streams");

            // Said once at the default log level, not at every redial (it was said at Debug only).
            var warning = Assert.Single(warnings.Entries);
            Assert.Contains($"Node {Peer} at http://127.0.0.1:", warning, StringComparison.Ordinal);
            Assert.Contains($"refused this node's Raft traffic (InvalidArgument): message for node {Peer} sent to node {Peer + 1}", warning, StringComparison.Ordinal);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    /// <summary>Heartbeats to the peer, as a leader sends them, until its link has broken seven times (bounded by <paramref name="within"/>).</summary>
    private static async Task SendHeartbeatsUntilSevenBreaksAsync(PeerTransport transport, CountingEvents events, TimeSpan within, Func<string>? context = null)
    {
        var deadline = DateTime.UtcNow + within;
        while (events.Unreachable < 7)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the link to the peer broke {events.Unreachable} times in {within.TotalSeconds} s {context?.Invoke()}");
            transport.Send(new Message { Type = MessageType.Heartbeat, From = 1, To = Peer, Term = 1 });
            await Task.Delay(5);
        }
    }

    private sealed class WarningLog : ILogger<PeerTransport>
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _entries = new();

        public IReadOnlyCollection<string> Entries => _entries;

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                _entries.Enqueue(formatter(state, exception));
            }
        }
    }

    private static async Task CopyAsync(Socket from, Socket to, CancellationToken cancellationToken)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            int read;
            while ((read = await from.ReceiveAsync(buffer, cancellationToken)) > 0)
            {
                await to.SendAsync(buffer.AsMemory(0, read), cancellationToken);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException)
        {
            // The relay cut the connection, or one end closed it.
        }
    }
}
