using System.Buffers;
using System.IO.Pipelines;
using Dcache.Gateway.Commands;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;
using Google.Protobuf;

namespace Dcache.Gateway.Tests;

/// <summary>What a connection's flush holds for a slow client, and when it gives the flush up.</summary>
public sealed class HeldRepliesTests
{
    private const long Limit = 1024;

    [Fact]
    public async Task AReplyArrivingAfterTheFlushWasJudgedWithinTheLimitCancelsNoLaterFlush()
    {
        var pipe = new Pipe();
        // Continuations run inside SetResult: the reply is counted (or not) before SetResult returns.
        var late = new TaskCompletionSource<Reply>();
        var held = new HeldReplies(pipe.Writer, Limit, flushing: 10);
        held.Watch(new PendingReply(null, late.Task));

        // The flush ended by itself with the client reading; the connection decides it stays within the limit ...
        Assert.True(held.StopWatching());

        // ... and only then does the batch's next reply arrive, a large one.
        late.SetResult(new Reply { Bulk = ByteString.CopyFrom(new byte[Limit * 2]) });
        held.Dispose();

        pipe.Writer.Write(new byte[] { 1 });
        var next = await pipe.Writer.FlushAsync();
        Assert.False(next.IsCanceled);
    }

    [Fact]
    public async Task AReplyPastTheLimitWhileTheFlushWaitsCancelsItAndTheConnectionIsToldToClose()
    {
        // A pipe whose reader takes nothing and whose writer pauses at once: the flush waits for the client.
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 1, resumeWriterThreshold: 1));
        pipe.Writer.Write(new byte[16]);
        var flushing = pipe.Writer.FlushAsync();
        Assert.False(flushing.IsCompleted);

        var late = new TaskCompletionSource<Reply>();
        var held = new HeldReplies(pipe.Writer, Limit, flushing: 16);
        held.Watch(new PendingReply(null, late.Task));
        late.SetResult(new Reply { Bulk = ByteString.CopyFrom(new byte[Limit * 2]) });

        var flush = await flushing.AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(flush.IsCanceled);
        Assert.False(held.StopWatching());
    }
}
