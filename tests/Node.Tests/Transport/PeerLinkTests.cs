using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Transport;

/// <summary>A Raft link's end of life, and what a receiving node refuses on a stream already open.</summary>
public sealed class PeerLinkTests
{
    private const ulong Peer = 2;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ARetiredLinkDeliversWhatWasQueuedBeforeItCloses()
    {
        // A removed peer learns its removal from the last Appends queued for it. The link wrote them, completed its
        // stream and closed at once, which reset the stream: the peer dropped what it had not read yet.
        var inbox = new SlowInbox(Peer, TimeSpan.FromMilliseconds(2));
        await using var server = await StartAsync(inbox);
        var events = new CountingEvents();
        await using var transport = NewTransport(events);
        transport.SetPeers(new Dictionary<ulong, string> { [Peer] = server.Address });

        const int messages = 100;
        for (var i = 0; i < messages; i++)
        {
            transport.Send(new Message { Type = MessageType.Heartbeat, From = 1, To = Peer, Term = 1, Commit = (ulong)i });
        }

        // Retired once the link is up, as a member's link is when its removal applies (a cold start, JIT and all, can
        // take longer than the one second a retiring link is given).
        await Eventually.WaitAsync(() => inbox.Posted >= 1, Patience, "the link never delivered a message");
        transport.SetPeers(new Dictionary<ulong, string>());
        await Eventually.WaitAsync(() => inbox.Posted >= messages, Patience, () => $"the peer read {inbox.Posted} of {messages} messages queued before the link was retired");
    }

    [Fact]
    public async Task APeerRemovedWhileItsStreamIsOpenIsRefusedOnThatStream()
    {
        var inbox = new SlowInbox(Peer, TimeSpan.Zero);
        await using var server = await StartAsync(inbox);
        var events = new CountingEvents();
        await using var transport = NewTransport(events);
        transport.SetPeers(new Dictionary<ulong, string> { [Peer] = server.Address });
        transport.Send(new Message { Type = MessageType.Heartbeat, From = 1, To = Peer, Term = 1 });
        await Eventually.WaitAsync(() => inbox.Posted == 1, Patience, "the first message never arrived");

        // Pre-votes, as a removed node that does not know it sends them, until the sender sees its stream refused (a
        // send-only stream shows that at a later write).
        inbox.Removed = true;
        var deadline = DateTime.UtcNow + Patience;
        while (events.Unreachable == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "the stream of a removed peer was never refused");
            transport.Send(new Message { Type = MessageType.PreVote, From = 1, To = Peer, Term = 2 });
            await Task.Delay(5);
        }

        Assert.Equal(1, inbox.Posted); // nothing after the removal reached the core
    }

    [Fact]
    public async Task AMessageForAPeerWithoutALinkIsReportedUnreachable()
    {
        // Dropped silently, the core would keep waiting for the peer's answer (a probe, a snapshot, a read round) instead
        // of treating the peer as unreachable and trying again.
        var events = new CountingEvents();
        await using var transport = NewTransport(events);
        transport.SetPeers(new Dictionary<ulong, string>());

        transport.Send(new Message { Type = MessageType.Heartbeat, From = 1, To = Peer, Term = 1 });

        Assert.Equal(1, events.Unreachable);
    }

    private static PeerTransport NewTransport(CountingEvents events) =>
        new(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion,
            new PeerClocks(TimeProvider.System), events, NullLogger<PeerTransport>.Instance);

    private static async Task<TestPeer> StartAsync(IRaftInbox inbox)
    {
        return new TestPeer(await GrpcTestServer.StartRaftTransportAsync(inbox, new ClusterCredentials("test", "secret")));
    }

    private sealed class TestPeer(WebApplication app) : IAsyncDisposable
    {
        public string Address { get; } = $"http://127.0.0.1:{GrpcTestServer.PortOf(app)}";

        public async ValueTask DisposeAsync()
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    /// <summary>Takes each message after <paramref name="delay"/> (a busy node), and counts them; refuses a peer once told it was removed.</summary>
    private sealed class SlowInbox(ulong nodeId, TimeSpan delay) : IRaftInbox
    {
        private int _posted;

        public int Posted => Volatile.Read(ref _posted);

        public volatile bool Removed;

        public ulong NodeId => nodeId;

        public CancellationToken Closing => CancellationToken.None;

        public bool WasRemoved(ulong peer) => Removed;

        public void PeerAddressHeard(ulong peer, string address)
        {
        }

        public void PeerEntryFormatHeard(ulong peer, byte format)
        {
        }

        public void PeerClockHeard(ulong peer, long readingMs, long echoMs, long echoHeldMs, long? clusterOffsetMs)
        {
        }

        public bool TryPost(Message message, long readTimeMs = 0)
        {
            if (delay > TimeSpan.Zero)
            {
                Thread.Sleep(delay);
            }

            Interlocked.Increment(ref _posted);
            return true;
        }

        public IIncomingSnapshot BeginSnapshot(ulong peer, Message message) => throw new NotSupportedException();
    }
}
