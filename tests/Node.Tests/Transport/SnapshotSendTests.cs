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

    /// <summary>
    /// A peer that finds a snapshot's data does not match its checksum refuses it (it keeps nothing): the leader must hear
    /// the send failed, or it takes the peer for caught up to the snapshot and sends it Appends it cannot take.
    /// </summary>
    [Fact]
    public async Task A_snapshot_the_peer_finds_damaged_is_refused_and_reported_failed()
    {
        var credentials = new ClusterCredentials("test", "secret");
        var inbox = new AcceptingInbox(2) { FailChecksums = true };
        await using var app = await GrpcTestServer.StartRaftTransportAsync(inbox, credentials);
        try
        {
            var events = new CountingEvents();
            await using var transport = new PeerTransport(1, "http://127.0.0.1:1", credentials, 1 << 20, CacheCommand.FormatVersion,
                new PeerClocks(TimeProvider.System), events, NullLogger<PeerTransport>.Instance);
            transport.SetPeers(new Dictionary<ulong, string> { [2] = $"http://127.0.0.1:{GrpcTestServer.PortOf(app)}" });
            var snapshot = new SnapshotMetadata(100, 7, Membership.Of([1UL, 2UL]));
            transport.SendSnapshot(new Message { Type = MessageType.Snapshot, From = 1, To = 2, Term = 7, Snapshot = snapshot }, new FixedSource(snapshot, new byte[3000]));

            await Eventually(() => !events.SnapshotsSent.IsEmpty);
            Assert.Equal([(2UL, 7UL, false)], events.SnapshotsSent);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    /// <summary>
    /// The chunks of a snapshot must arrive at the offsets of the bytes before them: a stream that skipped or repeated
    /// bytes would store a different snapshot than the one sent, so it is refused at the first chunk out of place rather
    /// than left to the checksum at the end.
    /// </summary>
    [Fact]
    public async Task A_snapshot_chunk_at_another_offset_than_the_bytes_received_so_far_is_refused()
    {
        var credentials = new ClusterCredentials("test", "secret");
        var inbox = new AcceptingInbox(2);
        await using var app = await GrpcTestServer.StartRaftTransportAsync(inbox, credentials);
        try
        {
            using var channel = Dcache.Protocol.GrpcChannels.ForNode($"http://127.0.0.1:{GrpcTestServer.PortOf(app)}");
            var client = new Dcache.Protocol.Raft.RaftTransport.RaftTransportClient(channel);
            var snapshot = new SnapshotMetadata(100, 7, Membership.Of([1UL, 2UL]));
            using var call = client.InstallSnapshot(credentials.ToHeaders(from: 1), DateTime.UtcNow + Patience);
            var message = RaftMessageCodec.ToWire(new Message { Type = MessageType.Snapshot, From = 1, To = 2, Term = 7, Snapshot = snapshot });
            await call.RequestStream.WriteAsync(new Dcache.Protocol.Raft.SnapshotChunk { Offset = 0, Message = message });
            await call.RequestStream.WriteAsync(new Dcache.Protocol.Raft.SnapshotChunk { Offset = 0, Data = Google.Protobuf.ByteString.CopyFrom(new byte[100]) });
            try
            {
                // Bytes 100 to 199 skipped.
                await call.RequestStream.WriteAsync(new Dcache.Protocol.Raft.SnapshotChunk { Offset = 200, Data = Google.Protobuf.ByteString.CopyFrom(new byte[100]) });
                await call.RequestStream.WriteAsync(new Dcache.Protocol.Raft.SnapshotChunk { Offset = 300, Last = true, Checksum = 0 });
                await call.RequestStream.CompleteAsync();
            }
            catch (Grpc.Core.RpcException)
            {
                // The peer may end the call before the last writes land; the call's status says why.
            }

            var refusal = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => call.ResponseAsync);
            Assert.Equal(Grpc.Core.StatusCode.InvalidArgument, refusal.StatusCode);
            Assert.Contains("offset 200, expected 100", refusal.Status.Detail, StringComparison.Ordinal);
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

    /// <summary>A snapshot of the given bytes, sent as one chunk.</summary>
    private sealed class FixedSource(SnapshotMetadata metadata, byte[] data) : ISnapshotSource
    {
        public SnapshotMetadata Metadata => metadata;

        public ulong Checksum => 1;

        public async IAsyncEnumerable<ReadOnlyMemory<byte>> ReadChunksAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
        {
            await Task.Yield();
            yield return data;
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
