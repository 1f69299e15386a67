using System.Net;
using System.Net.Sockets;
using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Transport;

/// <summary>How a Raft peer link waits before it dials again.</summary>
public sealed class PeerTransportBackoffTests
{
    private const ulong Peer = 2;

    /// <summary>How long the broken peer keeps each connection open: the link's first waits are shorter.</summary>
    private static readonly TimeSpan HeldFor = TimeSpan.FromMilliseconds(100);

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
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (events.Unreachable < 7)
            {
                Assert.True(DateTime.UtcNow < deadline, $"the link to the peer broke {events.Unreachable} times in 30 s ({accepted} dials)");
                transport.Send(new Message { Type = MessageType.Heartbeat, From = 1, To = Peer, Term = 1 });
                await Task.Delay(5);
            }

            // After the seventh break it waits 20 ms doubled six times, capped at 1 s (reading just as the seventh break is
            // counted may see the sixth's, 640 ms). Before, every write the socket buffered restarted the backoff: it stayed
            // at 20 ms, about 50 dials a second against a peer that never answered.
            Assert.True(transport.LastReconnectDelay(Peer) >= TimeSpan.FromMilliseconds(640),
                $"last reconnect delay {transport.LastReconnectDelay(Peer).TotalMilliseconds} ms after {accepted} dials, {events.Unreachable} breaks");
        }

        await stop.CancelAsync();
        await acceptor.ContinueWith(_ => { }, TaskScheduler.Default);
    }

    private sealed class CountingEvents : ITransportEvents
    {
        private int _unreachable;

        public int Unreachable => Volatile.Read(ref _unreachable);

        public void PeerUnreachable(ulong peer) => Interlocked.Increment(ref _unreachable);

        public void SnapshotSent(ulong peer, bool succeeded)
        {
        }
    }
}
