using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Transport;

public sealed class SnapshotSendTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    /// <summary>
    /// A leader that stops leading while it streams a snapshot ends the stream: the peer takes one snapshot at a time,
    /// and would refuse the new leader's until the deposed one's finished, only to drop that one as from an old term.
    /// The outcome is still reported, with the term it was sent in (the driver ignores reports of an earlier term).
    /// </summary>
    [Fact]
    public async Task A_snapshot_being_sent_ends_when_its_sender_stops_leading_and_is_reported_failed_with_its_term()
    {
        var credentials = new ClusterCredentials("test", "secret");
        var inbox = new AcceptingInbox(2);
        await using var app = await GrpcTestServer.StartRaftTransportAsync(inbox, credentials);
        try
        {
            var events = new CountingEvents();
            await using var transport = new PeerTransport(1, "http://127.0.0.1:1", credentials, 1 << 20, CacheCommand.FormatVersion,
                new PeerClocks(TimeProvider.System), events, NullLogger<PeerTransport>.Instance);
            transport.SetPeers(new Dictionary<ulong, string> { [2] = $"http://127.0.0.1:{GrpcTestServer.PortOf(app)}" });
            using var leadership = new CancellationTokenSource();
            var snapshot = new SnapshotMetadata(100, 7, Membership.Of([1UL, 2UL]));
            transport.SendSnapshot(new Message { Type = MessageType.Snapshot, From = 1, To = 2, Term = 7, Snapshot = snapshot }, new EndlessSource(snapshot), leadership.Token);
            await inbox.FirstChunk.WaitAsync(Patience);
            Assert.Empty(events.SnapshotsSent);

            await leadership.CancelAsync();
            await Eventually(() => !events.SnapshotsSent.IsEmpty);
            Assert.Equal([(2UL, 7UL, false)], events.SnapshotsSent);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    private static async Task Eventually(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the snapshot's outcome was not reported within 30 s");
            await Task.Delay(10);
        }
    }

    /// <summary>A snapshot whose data never ends: one chunk, then it waits until cancelled.</summary>
    private sealed class EndlessSource(SnapshotMetadata metadata) : ISnapshotSource
    {
        public SnapshotMetadata Metadata => metadata;

        public ulong Checksum => 0;

        public async IAsyncEnumerable<ReadOnlyMemory<byte>> ReadChunksAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
        {
            yield return new byte[1024];
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }
    }
}
