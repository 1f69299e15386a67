using System.Globalization;
using Dcache.Raft;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Node.Transport;

/// <summary>Where inbound Raft traffic goes: the node's Raft driver.</summary>
public interface IRaftInbox
{
    ulong NodeId { get; }

    /// <summary>Cancelled when the node closes its transport on shutdown.</summary>
    CancellationToken Closing { get; }

    /// <summary>
    /// True when this node saw <paramref name="peer"/> removed from the cluster. Any other node that has the cluster
    /// id and secret is heard, also one not (yet) in this node's membership: it may have joined while this node was
    /// down, and may lead the cluster this node must catch up with. Raft itself keeps such a node from disrupting
    /// (PreVote, and votes ignored while a leader is heard).
    /// </summary>
    bool WasRemoved(ulong peer);

    /// <summary>A known peer's stream said where it listens (used for members whose address this node lacks).</summary>
    void PeerAddressHeard(ulong peer, string address);

    /// <summary>A peer's stream said the newest log entry format its build reads.</summary>
    void PeerEntryFormatHeard(ulong peer, byte format);

    /// <summary>A message from <paramref name="peer"/> carried its wall-clock reading and its echo of this node's last one (and how long it held that), and from a leader its correction to the cluster's time (see <see cref="Consensus.PeerClocks"/>).</summary>
    void PeerClockHeard(ulong peer, long readingMs, long echoMs, long echoHeldMs, long? clusterOffsetMs);

    /// <summary>
    /// Hands a message to the Raft loop; false once the node takes no more input (its loop stopped).
    /// <paramref name="readTimeMs"/> is the leader's time a ReadIndex response carried (0: none).
    /// </summary>
    bool TryPost(Message message, long readTimeMs = 0);

    /// <summary>Starts receiving the snapshot <paramref name="message"/> announces; the sink stores chunks as they arrive.</summary>
    IIncomingSnapshot BeginSnapshot(ulong peer, Message message);
}

/// <summary>A snapshot being received: chunks are stored as they arrive, then the whole is checked and handed to Raft.</summary>
public interface IIncomingSnapshot : IAsyncDisposable
{
    ValueTask WriteAsync(ReadOnlyMemory<byte> chunk, CancellationToken cancellationToken);

    /// <summary>Checks the data against <paramref name="checksum"/> (CRC-32C), keeps it, and steps the snapshot's message. Throws <see cref="InvalidDataException"/> when the data is damaged.</summary>
    ValueTask CompleteAsync(ulong checksum, CancellationToken cancellationToken);
}

/// <summary>Receives Raft messages and snapshots from peers, after checking who sends them.</summary>
public sealed partial class RaftTransportService(IRaftInbox inbox, ClusterCredentials credentials, ILogger<RaftTransportService> logger) : Wire.RaftTransport.RaftTransportBase
{
    /// <summary>
    /// Sent in the headers of a <c>Send</c> stream this node takes, once its first message passed the checks (sender,
    /// credentials, addressed to this node): the peer learns its stream reached a working node that takes its traffic,
    /// which nothing else on a send-only stream tells it. A peer that keeps getting streams broken without it backs off
    /// further (<see cref="PeerTransport"/>); one whose first message is refused (sent to the wrong node's address) is
    /// so not dialling again every 20 ms.
    /// </summary>
    public const string StreamTakenHeader = "dcache-stream-taken";

    public override async Task<Wire.SendSummary> Send(IAsyncStreamReader<Wire.RaftMessage> requestStream, ServerCallContext context)
    {
        var from = Sender(context);
        ulong received = 0;
        // The stream lives as long as the peer keeps it open, or until this node closes on shutdown.
        using var lifetime = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, inbox.Closing);
        while (await MoveNextAsync(requestStream, lifetime.Token).ConfigureAwait(false))
        {
            if (inbox.WasRemoved(from))
            {
                // Removed while its stream was open: refused from now on, not only on the next stream it opens (its votes
                // would otherwise keep reaching this node's core).
                Log.RemovedPeer(logger, from);
                throw new RpcException(new Status(StatusCode.PermissionDenied, $"node {from} was removed from this cluster"));
            }

            var message = Validate(requestStream.Current, from);
            AdoptFoundingFromLeader(context, message);
            var heard = requestStream.Current;
            inbox.PeerClockHeard(from, heard.SenderClockMs, heard.EchoClockMs, heard.EchoHeldMs, heard.HasClusterOffsetMs ? heard.ClusterOffsetMs : null);
            if (message.Type == MessageType.Snapshot)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, "snapshots travel through InstallSnapshot, not Send"));
            }

            if (received == 0)
            {
                await context.WriteResponseHeadersAsync(new Metadata { { StreamTakenHeader, "1" } }).ConfigureAwait(false);
            }

            if (!inbox.TryPost(message, RaftMessageCodec.ReadTimeOf(heard)))
            {
                break; // this node stopped: the peer sees its stream end, as when a node goes away
            }

            received++;
        }

        return new Wire.SendSummary { Received = received };
    }

    private static async Task<bool> MoveNextAsync(IAsyncStreamReader<Wire.RaftMessage> stream, CancellationToken cancellationToken)
    {
        try
        {
            return await stream.MoveNext(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return false;
        }
        catch (IOException)
        {
            return false; // the peer went away (crashed, restarted, or closed its stream): normal for a cluster
        }
    }

    public override async Task<Wire.InstallSnapshotReply> InstallSnapshot(IAsyncStreamReader<Wire.SnapshotChunk> requestStream, ServerCallContext context)
    {
        var from = Sender(context);
        if (!await requestStream.MoveNext(context.CancellationToken).ConfigureAwait(false))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "empty snapshot stream"));
        }

        var first = requestStream.Current;
        var message = Validate(first.Message ?? throw new RpcException(new Status(StatusCode.InvalidArgument, "the first snapshot chunk carries no message")), from);
        if (message.Type != MessageType.Snapshot || message.Snapshot is null)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "the first snapshot chunk must carry a Snapshot message"));
        }

        AdoptFoundingFromLeader(context, message);

        // A node that stops abandons a snapshot it is receiving, as it does one it is writing itself: the server's stop
        // would otherwise wait for the leader to send the rest (seconds for a few million keys). The leader retries later.
        using var lifetime = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, inbox.Closing);
        try
        {
            return await ReceiveSnapshotAsync(requestStream, first, from, message, lifetime.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (inbox.Closing.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
        {
            // Not an error of this node's: the leader is told, as any caller of a stopping node is, and sends it again later.
            throw new RpcException(new Status(StatusCode.Unavailable, "the node is stopping: the snapshot being received was abandoned"));
        }
        catch (Storage.SnapshotStoreBusyException busy)
        {
            // The node is writing a snapshot of its own (seconds at millions of keys): a passing refusal, not a handler
            // failure (which gRPC logs as an error with its stack, and the leader sees as "Unknown").
            throw new RpcException(new Status(StatusCode.Unavailable, busy.Message));
        }
    }

    private async Task<Wire.InstallSnapshotReply> ReceiveSnapshotAsync(IAsyncStreamReader<Wire.SnapshotChunk> requestStream, Wire.SnapshotChunk first, ulong from, Message message, CancellationToken lifetime)
    {
        await using var incoming = inbox.BeginSnapshot(from, message);
        ulong offset = 0;
        var chunk = first;
        while (true)
        {
            if (chunk.Offset != offset)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"snapshot chunk at offset {chunk.Offset}, expected {offset}"));
            }

            if (chunk.Data.Length > 0)
            {
                await incoming.WriteAsync(chunk.Data.Memory, lifetime).ConfigureAwait(false);
                offset += (ulong)chunk.Data.Length;
            }

            if (chunk.Last)
            {
                try
                {
                    await incoming.CompleteAsync(chunk.Checksum, lifetime).ConfigureAwait(false);
                }
                catch (InvalidDataException ex)
                {
                    Log.SnapshotRejected(logger, from, ex.Message);
                    return new Wire.InstallSnapshotReply { Accepted = false, Error = ex.Message };
                }

                return new Wire.InstallSnapshotReply { Accepted = true };
            }

            if (!await requestStream.MoveNext(lifetime).ConfigureAwait(false))
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, "snapshot stream ended without its last chunk"));
            }

            chunk = requestStream.Current;
        }
    }

    private ulong Sender(ServerCallContext context)
    {
        var header = context.RequestHeaders.GetValue(ClusterCredentials.FromHeader);
        if (!ulong.TryParse(header, NumberStyles.None, CultureInfo.InvariantCulture, out var from) || from == 0)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"missing or malformed {ClusterCredentials.FromHeader} header"));
        }

        if (inbox.WasRemoved(from))
        {
            Log.RemovedPeer(logger, from);
            throw new RpcException(new Status(StatusCode.PermissionDenied, $"node {from} was removed from this cluster"));
        }

        if (context.RequestHeaders.GetValue(ClusterCredentials.CacheSettingsHeader) is { Length: > 0 } theirs
            && credentials.CacheSettings.Length > 0 && theirs != credentials.CacheSettings)
        {
            // Entries applied under different settings leave different caches behind (other keys evicted, other retries
            // applied), and nothing would ever bring them together again: no Raft traffic either way until they agree.
            // The peer redials about once a second for as long as it runs so: said once per peer and settings.
            if (credentials.FirstRefusal(from, $"cache settings {theirs}"))
            {
                Log.CacheSettingsDiffer(logger, from, theirs, credentials.CacheSettings);
            }
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"node {from}'s cache settings ({theirs}) differ from node {inbox.NodeId}'s ({credentials.CacheSettings}): replicas would diverge; set MaxMemoryBytes and SessionTimeoutSeconds identically on every node"));
        }

        if (context.RequestHeaders.GetValue(ClusterCredentials.FoundingLogHeader) is { Length: > 0 } theirLog
            && credentials.FoundingLog.Length > 0 && theirLog != credentials.FoundingLog)
        {
            // Logs founded apart may hold different entries at one index and term, which Raft would take for the same.
            // Either side may be the one founded apart: the message names both and says how to tell.
            if (credentials.FirstRefusal(from, theirLog))
            {
                Log.FoundingLogsDiffer(logger, from, theirLog, credentials.FoundingLog);
            }

            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"node {from}'s log was founded from {theirLog}, node {inbox.NodeId}'s from {credentials.FoundingLog}: their logs may hold different entries at one index and term. "
                + "The one founded apart from the cluster's other members (dcachectl recover inspect shows each node's) is a node started without Join=true, or seeded apart: "
                + "wipe that one's data directory and start it with Join=true (then member add it)"));
        }

        if (context.RequestHeaders.GetValue(ClusterCredentials.FromAddressHeader) is { Length: > 0 } address
            && Uri.TryCreate(address, UriKind.Absolute, out var uri) && uri.Scheme == Uri.UriSchemeHttp)
        {
            inbox.PeerAddressHeard(from, address.TrimEnd('/'));
        }

        // A build from before the header existed reads format 1 only.
        var format = byte.TryParse(context.RequestHeaders.GetValue(ClusterCredentials.EntryFormatHeader), NumberStyles.None, CultureInfo.InvariantCulture, out var advertised) ? advertised : (byte)1;
        inbox.PeerEntryFormatHeard(from, format);
        return from;
    }

    /// <summary>A node without a founding record (it joined) takes the one its leader's traffic carries (see <see cref="ClusterCredentials.AdoptFoundingLog"/>).</summary>
    private void AdoptFoundingFromLeader(ServerCallContext context, Message message)
    {
        if (credentials.FoundingLog.Length == 0
            && message.Type is MessageType.Append or MessageType.Heartbeat or MessageType.Snapshot
            && context.RequestHeaders.GetValue(ClusterCredentials.FoundingLogHeader) is { Length: > 0 } leaders
            && credentials.AdoptFoundingLog(leaders))
        {
            Log.FoundingLogAdopted(logger, leaders, message.From);
        }
    }

    private Message Validate(Wire.RaftMessage wire, ulong from)
    {
        Message message;
        try
        {
            message = RaftMessageCodec.FromWire(wire);
        }
        catch (FormatException ex)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"malformed Raft message: {ex.Message}"));
        }

        if (message.From != from)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"message claims to come from node {message.From} on a stream from node {from}"));
        }

        if (message.To != inbox.NodeId)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"message for node {message.To} sent to node {inbox.NodeId}"));
        }

        return message;
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Error, Message = "Refused Raft traffic from node {Peer}: its cache settings ({Theirs}) differ from this node's ({Ours}), and replicas that apply entries under different settings diverge (logged once per peer and settings). Set MaxMemoryBytes and SessionTimeoutSeconds identically on every node (see operations.md)")]
        public static partial void CacheSettingsDiffer(ILogger logger, ulong peer, string theirs, string ours);

        [LoggerMessage(Level = LogLevel.Error, Message = "Refused Raft traffic from node {Peer}: its log was founded from {Theirs}, this node's from {Ours}, so the two logs may hold different entries at one index and term (logged once per peer and founding). One of the two was founded apart from the cluster's other members: a node started without Join=true (its InitialCluster differing from the founding list), members restored from different backups or member lists, or two survivors each made the new cluster by force-new-cluster. Find which (the other members' logs, or dcachectl recover inspect on a stopped node), wipe that one's data directory and start it with Join=true, then add it with dcachectl member add (see operations.md)")]
        public static partial void FoundingLogsDiffer(ILogger logger, ulong peer, string theirs, string ours);

        [LoggerMessage(Level = LogLevel.Information, Message = "Took the founding of the cluster's log ({FoundingLog}) from leader {Leader}: peers founded otherwise are refused from now on")]
        public static partial void FoundingLogAdopted(ILogger logger, string foundingLog, ulong leader);


        [LoggerMessage(Level = LogLevel.Warning, Message = "Refused Raft traffic from node {Peer}, which was removed from the cluster")]
        public static partial void RemovedPeer(ILogger logger, ulong peer);

        [LoggerMessage(Level = LogLevel.Warning, Message = "Refused a snapshot from node {Peer}: {Reason}")]
        public static partial void SnapshotRejected(ILogger logger, ulong peer, string reason);
    }
}
