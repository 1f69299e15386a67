using Dcache.Node.Consensus;
using Grpc.Core;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Services;

/// <summary>The gateway's entry point: runs commands through the Raft driver and reports who leads.</summary>
public sealed class CacheService(RaftDriver driver, AddressBook addresses, Hosting.NodeOptions options, Hosting.NodeRuntime runtime, Hosting.NodeMetrics metrics) : Proto.Cache.CacheBase
{
    public override Task<Proto.Reply> ExecuteOne(Proto.Command request, ServerCallContext context) =>
        ExecuteOneAsync(driver, request, context.Deadline, context.CancellationToken);

    /// <summary>
    /// One command of a unary call, which ends at its deadline or when the caller cancels (<paramref name="callEnded"/>).
    /// A read waits no longer than the call: the time left until <paramref name="deadline"/> is its <c>timeout_ms</c>
    /// (or the one it carries, if shorter), and once the call ended it is dropped, a long read between slices, as over
    /// a command stream. A write handed to the driver cannot be withdrawn: a call that ends before its outcome is known
    /// says so in its status, and the write may still apply.
    /// </summary>
    internal static async Task<Proto.Reply> ExecuteOneAsync(RaftDriver driver, Proto.Command request, DateTime deadline, CancellationToken callEnded)
    {
        if (!request.IsWrite && deadline != DateTime.MaxValue)
        {
            var left = (uint)Math.Clamp(Math.Ceiling((deadline - DateTime.UtcNow).TotalMilliseconds), 1, uint.MaxValue);
            request.TimeoutMs = request.TimeoutMs == 0 ? left : Math.Min(request.TimeoutMs, left);
        }

        var replies = new CallReplies(callEnded);
        driver.Execute(request, replies);
        try
        {
            return await replies.Task.WaitAsync(callEnded).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (callEnded.IsCancellationRequested)
        {
            var code = deadline <= DateTime.UtcNow ? StatusCode.DeadlineExceeded : StatusCode.Cancelled;
            throw new RpcException(new Status(code, request.IsWrite
                ? "outcome unknown: the call ended before the write's outcome was known; a write handed to the node is not withdrawn, and it may still apply"
                : "the call ended before the read was served: it was dropped"));
        }
    }

    /// <summary>The reply of one unary call's command; abandoned once the call ended (a long read stops taking slices).</summary>
    private sealed class CallReplies(CancellationToken callEnded) : TaskCompletionSource<Proto.Reply>(TaskCreationOptions.RunContinuationsAsynchronously), IReplySink
    {
        public bool Abandoned => callEnded.IsCancellationRequested;

        public void Complete(Proto.Reply reply) => TrySetResult(reply);
    }

    public override async Task Execute(IAsyncStreamReader<Proto.CommandBatch> requestStream, IServerStreamWriter<Proto.ReplyBatch> responseStream, ServerCallContext context)
    {
        metrics.CommandStreamsChanged(1);
        try
        {
            await ServeStreamAsync(driver, options.MaxMessageBytes, requestStream, responseStream, runtime.Closing, context.CancellationToken).ConfigureAwait(false);
        }
        finally
        {
            metrics.CommandStreamsChanged(-1);
        }
    }

    /// <summary>
    /// One command stream: runs its commands as they come and writes their replies as they finish, until the gateway
    /// hangs up (<paramref name="callEnded"/>) or this node closes (<paramref name="closing"/>). A gateway that vanished
    /// without closing its connection is hung up on by the node's HTTP/2 keepalive (NodeOptions.KeepAlivePingDelaySeconds).
    /// </summary>
    internal static async Task ServeStreamAsync(
        RaftDriver driver,
        int maxMessageBytes,
        IAsyncStreamReader<Proto.CommandBatch> requestStream,
        IServerStreamWriter<Proto.ReplyBatch> responseStream,
        CancellationToken closing,
        CancellationToken callEnded)
    {
        // The stream lives as long as the gateway keeps it open, or until this node closes (it stops, or its loop
        // failed): the gateway never hangs up by itself, and the server would wait for it until the host's shutdown
        // timeout ran out. Replies not yet written are lost with the stream, as when the node goes away.
        using var lifetime = CancellationTokenSource.CreateLinkedTokenSource(callEnded, closing);

        // Replies are written by one writer task as commands finish, batched by whatever has finished meanwhile.
        var replies = new StreamReplies();
        var writer = WriteRepliesAsync(replies.Finished.Reader, responseStream, maxMessageBytes, lifetime.Token);
        var readToEnd = false;
        var broken = false;
        try
        {
            while (await requestStream.MoveNext(lifetime.Token).ConfigureAwait(false))
            {
                foreach (var command in requestStream.Current.Commands)
                {
                    replies.Started();
                    driver.Execute(command, replies);
                }
            }

            readToEnd = true;
        }
        catch (OperationCanceledException) when (closing.IsCancellationRequested)
        {
            // This node closes: the call ends here, whatever is still in flight.
        }
        catch (IOException)
        {
            // The gateway's connection broke (the gateway was killed, or gave up on a connection its keepalive found
            // silent): it hung up, as far as this stream goes. Not an error of this node's, so not logged as one.
            broken = true;
        }
        finally
        {
            replies.ReadingDone();
            if (!readToEnd || lifetime.IsCancellationRequested)
            {
                // The gateway hung up (it stopped, or reset the stream) or this node closes: replies still due have no
                // way back, so the long reads among them stop taking slices.
                replies.Abandon();
            }
        }

        if (broken)
        {
            // Replies have no way back: the writer stops too.
            await lifetime.CancelAsync().ConfigureAwait(false);
        }

        try
        {
            await writer.ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (closing.IsCancellationRequested || broken)
        {
        }
        catch (IOException)
        {
            // The connection broke while replies were being written: they have no way back.
        }
        finally
        {
            // Normally every reply was written by now; if writing failed, the rest cannot be.
            replies.Abandon();
        }
    }

    /// <summary>
    /// The replies of one command stream, queued for its writer as the driver completes them (on its loop: a channel
    /// write, no task or thread-pool hop per command). Complete once reading is done and every command has its reply.
    /// </summary>
    private sealed class StreamReplies : IReplySink
    {
        private readonly object _gate = new();
        private int _inFlight;
        private bool _readingDone;
        private volatile bool _abandoned;

        public bool Abandoned => _abandoned;

        public void Abandon() => _abandoned = true;

        public System.Threading.Channels.Channel<Proto.Reply> Finished { get; } =
            System.Threading.Channels.Channel.CreateUnbounded<Proto.Reply>(new() { SingleReader = true });

        public void Started() => Interlocked.Increment(ref _inFlight);

        public void Complete(Proto.Reply reply)
        {
            Finished.Writer.TryWrite(reply);
            lock (_gate)
            {
                if (Interlocked.Decrement(ref _inFlight) == 0 && _readingDone)
                {
                    Finished.Writer.TryComplete();
                }
            }
        }

        public void ReadingDone()
        {
            lock (_gate)
            {
                _readingDone = true;
                if (Volatile.Read(ref _inFlight) == 0)
                {
                    Finished.Writer.TryComplete();
                }
            }
        }
    }

    private static async Task WriteRepliesAsync(System.Threading.Channels.ChannelReader<Proto.Reply> finished, IServerStreamWriter<Proto.ReplyBatch> output, int maxMessageBytes, CancellationToken cancellationToken)
    {
        var maxReplyBytes = Protocol.MessageLimits.MaxItemBytes(maxMessageBytes);
        while (await finished.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            var batch = new Proto.ReplyBatch();
            var bytes = 0;
            while (batch.Replies.Count < 1024 && finished.TryPeek(out var reply))
            {
                var size = Protocol.MessageLimits.FramedSize(reply);
                if (size > maxReplyBytes)
                {
                    // Sent as it is, the reply would break the stream and every command on it; the command fails alone.
                    // Only the reply is lost: a write (an EXEC of GETs and SETs, say) has applied, and the error says so
                    // rather than read as "not applied", as other command errors do.
                    reply = new Proto.Reply { Id = reply.Id, Error = $"ERR reply too large: {size} bytes, over this node's limit of {maxReplyBytes} (Dcache:Node:MaxMessageBytes less header room); if the command was a write or a transaction, it was applied and only its reply is lost" };
                    size = Protocol.MessageLimits.FramedSize(reply);
                }

                if (batch.Replies.Count > 0 && bytes + size > maxReplyBytes)
                {
                    break;
                }

                finished.TryRead(out _);
                batch.Replies.Add(reply);
                bytes += size;
            }

            await output.WriteAsync(batch, cancellationToken).ConfigureAwait(false);
        }
    }

    public override async Task<Proto.NodeStatus> Status(Proto.StatusRequest request, ServerCallContext context)
    {
        try
        {
            return await BuildStatusAsync(request).WaitAsync(context.CancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested)
        {
            // The caller's deadline passed (or it went away) while the loop was busy, replaying a large log at start,
            // say. Writing the reply to a call gRPC had already ended raced with that end and logged "Invalid ordering
            // of calling StartAsync or CompleteAsync and Advance".
            throw new RpcException(new Status(context.Deadline <= DateTime.UtcNow ? StatusCode.DeadlineExceeded : StatusCode.Cancelled,
                "the call ended before this node's loop could answer"));
        }
    }

    private async Task<Proto.NodeStatus> BuildStatusAsync(Proto.StatusRequest request)
    {
        var status = await driver.CurrentStatusAsync().ConfigureAwait(false);
        var reply = new Proto.NodeStatus
        {
            NodeId = status.NodeId,
            ClusterId = options.ClusterId,
            Role = status.Role.ToString(),
            Term = status.Term,
            LeaderId = status.LeaderId,
            LeaderAddress = addresses.Find(status.LeaderId) ?? "",
            CommitIndex = status.CommitIndex,
            AppliedIndex = status.AppliedIndex,
            LastIndex = status.LastIndex,
        };
        foreach (var id in status.Membership.All.Order())
        {
            reply.Members.Add(new Proto.Member { Id = id, Address = addresses.Find(id) ?? "", Voter = status.Membership.IsVoter(id) });
        }

        if (request.IncludeDigest)
        {
            var (index, digest) = await driver.DigestAsync().ConfigureAwait(false);
            reply.DigestIndex = index;
            reply.StateDigest = digest;
        }

        return reply;
    }
}
