using System.Net;
using System.Net.Sockets;
using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Transport;

/// <summary>What a broken Raft stream does to the clock readings of its peer.</summary>
public sealed class BrokenStreamClockTests
{
    private const ulong Peer = 2;

    [Fact]
    public async Task APeerWhoseStreamBrokeHasNoClockReadingLeft()
    {
        // A restarted peer breaks its streams, and its new process may run another clock: a reading of the old process
        // counted as the peer's clock put a leader's stamps 86 min ahead (chaos seed 760403).
        using var closed = new TcpListener(IPAddress.Loopback, 0);
        closed.Start();
        var port = ((IPEndPoint)closed.LocalEndpoint).Port;
        closed.Stop(); // nothing listens there now: every dial is refused

        var clocks = new PeerClocks(TimeProvider.System);
        var (sent, _, _) = clocks.ForMessageTo(Peer);
        clocks.Heard(Peer, sent + 5_000, sent);
        Assert.Contains(Peer, clocks.Offsets.Keys);

        var events = new CountingEvents();
        await using var transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion,
            clocks, events, NullLogger<PeerTransport>.Instance);
        transport.SetPeers(new Dictionary<ulong, string> { [Peer] = $"http://127.0.0.1:{port}" });
        transport.Send(new Message { Type = MessageType.Heartbeat, From = 1, To = Peer, Term = 1 });

        await Eventually.WaitAsync(() => events.Unreachable > 0, TimeSpan.FromSeconds(30), "the stream to the peer to break");
        Assert.DoesNotContain(Peer, clocks.Offsets.Keys);
    }
}
