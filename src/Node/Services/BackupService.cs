using System.Buffers;
using System.IO.Pipelines;
using Dcache.Node.Consensus;
using Dcache.Protocol.Backup;
using Dcache.Storage;
using Google.Protobuf;
using Grpc.Core;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Services;

/// <summary>
/// `dcachectl snapshot save`: a consistent snapshot of the cache state streamed to the operator. A linearizable read
/// (ReadIndex) comes first, so the state captured afterwards holds every write acknowledged before the call, on
/// whichever node serves it. The capture is written through a bounded pipe, one part at a time, never whole in memory.
/// </summary>
public sealed partial class BackupService(RaftDriver driver, AddressBook addresses, Transport.ClusterCredentials credentials, ILogger<BackupService> logger) : Backup.BackupBase
{
    private const int PartBytes = 256 * 1024;

    public override async Task SaveSnapshot(SaveSnapshotRequest request, IServerStreamWriter<SnapshotPart> responseStream, ServerCallContext context)
    {
        var barrier = await driver.ExecuteAsync(new Proto.Command { Dbsize = new Proto.DbSizeRequest(), Consistency = Proto.ReadConsistency.Linearizable }).ConfigureAwait(false);
        if (barrier.ResultCase == Proto.Reply.ResultOneofCase.Failure)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, $"cannot take a consistent snapshot: {barrier.Failure.Message}"));
        }

        var (metadata, state) = await driver.CaptureStateAsync().ConfigureAwait(false);
        var header = new SnapshotHeader
        {
            ClusterId = credentials.ClusterId,
            Index = metadata.Index,
            Term = metadata.Term,
            NodeId = driver.NodeId,
            CreatedUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
        };
        header.Members.AddRange(metadata.Membership.All.Order().Select(id => new Proto.Member
        {
            Id = id,
            Address = addresses.Find(id) ?? "",
            Voter = metadata.Membership.IsVoter(id),
        }));
        await responseStream.WriteAsync(new SnapshotPart { Header = header }, context.CancellationToken).ConfigureAwait(false);

        // The state is serialised on its own thread into a pipe that holds at most ~1 MiB; this call sends it on. If the
        // call ends first (the operator gave up, the stream broke), the serialising stops too.
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 4 * PartBytes, resumeWriterThreshold: 2 * PartBytes));
        using var sendingEnded = new CancellationTokenSource();
        var serialise = SerialiseAsync(pipe.Writer, output => state.WriteTo(output, sendingEnded.Token));

        ulong size = 0;
        uint crc = 0;
        try
        {
            while (true)
            {
                var read = await pipe.Reader.ReadAsync(context.CancellationToken).ConfigureAwait(false);
                var buffer = read.Buffer;
                while (buffer.Length >= PartBytes || (read.IsCompleted && !buffer.IsEmpty))
                {
                    var part = buffer.Slice(0, Math.Min(buffer.Length, PartBytes));
                    var bytes = part.ToArray();
                    crc = Crc32C.Append(crc, bytes);
                    size += (ulong)bytes.Length;
                    await responseStream.WriteAsync(new SnapshotPart { Data = UnsafeByteOperations.UnsafeWrap(bytes) }, context.CancellationToken).ConfigureAwait(false);
                    buffer = buffer.Slice(part.End);
                }

                pipe.Reader.AdvanceTo(buffer.Start, buffer.End);
                if (read.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is not (OperationCanceledException or RpcException or IOException))
        {
            // The serialiser failed (the pipe carries its exception): an operator's tool should hear why, and may ask
            // another node. Unmapped, it reached dcachectl as "Exception was thrown by handler".
            throw new RpcException(new Status(StatusCode.Unavailable, $"this node could not serialise its state: {ex.Message}"));
        }
        finally
        {
            await sendingEnded.CancelAsync().ConfigureAwait(false);
            await pipe.Reader.CompleteAsync().ConfigureAwait(false);
            await serialise.ConfigureAwait(false);
        }

        await responseStream.WriteAsync(new SnapshotPart { Trailer = new SnapshotTrailer { Size = size, Crc32C = crc, KeyCount = (ulong)state.KeyCount } }, context.CancellationToken).ConfigureAwait(false);
        Log.BackupStreamed(logger, metadata.Index, metadata.Term, state.KeyCount, size);
    }

    /// <summary>
    /// Runs <paramref name="write"/> on its own thread into <paramref name="writer"/>, then completes the writer: with
    /// the failure if it threw, so that the reader never takes a state cut short for a whole one.
    /// </summary>
    internal static Task SerialiseAsync(PipeWriter writer, Action<Stream> write) => Task.Factory.StartNew(
        () =>
        {
            try
            {
                // Left open: disposing the stream would complete the writer as if all went well, before a failure
                // could complete it with the exception (a pipe keeps its first completion).
                using (var output = writer.AsStream(leaveOpen: true))
                {
                    write(output);
                }

                writer.Complete();
            }
            catch (Exception ex)
            {
                writer.Complete(ex);
            }
        },
        CancellationToken.None,
        TaskCreationOptions.LongRunning,
        TaskScheduler.Default);

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "Backup snapshot at index {Index} (term {Term}) streamed: {Keys} keys, {Bytes} bytes")]
        public static partial void BackupStreamed(ILogger logger, ulong index, ulong term, int keys, ulong bytes);
    }
}
