using System.IO.Pipelines;
using Dcache.Gateway.Commands;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Resp;

/// <summary>
/// While a connection's flush waits for its client to take replies: the bytes it holds for that client, the flush's
/// own and those of the batch's later replies as they arrive. Past the limit the flush is cancelled, so that the
/// connection can be closed; watching stops at <see cref="StopWatching"/> or disposal (a reply arriving later counts for
/// nothing).
/// </summary>
internal sealed class HeldReplies : IDisposable
{
    private const int Watching = 0;
    private const int Stopped = 1;
    private const int Over = 2;

    private readonly PipeWriter _output;
    private readonly long _limit;
    private long _bytes;
    private int _state;

    public HeldReplies(PipeWriter output, long limit, long flushing)
    {
        _output = output;
        _limit = limit;
        Add(flushing);
    }

    /// <summary>True once what is held went past the limit (the flush was cancelled then).</summary>
    public bool Exceeded => Volatile.Read(ref _state) == Over;

    /// <summary>Counts <paramref name="reply"/> now if it is here, or when it arrives.</summary>
    public void Watch(PendingReply reply)
    {
        if (reply.Immediate is { } immediate)
        {
            Add(ReplyRenderer.EstimateSize(immediate));
        }
        else if (reply.Pending is { IsCompletedSuccessfully: true } arrived)
        {
            Add(ReplyRenderer.EstimateSize(arrived.Result));
        }
        else if (reply.Pending is { IsCompleted: false } pending)
        {
            pending.ContinueWith(
                static (arrived, state) =>
                {
                    if (arrived.IsCompletedSuccessfully)
                    {
                        ((HeldReplies)state!).Add(ReplyRenderer.EstimateSize(arrived.Result));
                    }
                },
                this,
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
        }
    }

    private void Add(long bytes)
    {
        if (Interlocked.Add(ref _bytes, bytes) > _limit && Interlocked.CompareExchange(ref _state, Over, Watching) == Watching)
        {
            // Wakes the flush; the connection sees Exceeded and closes. Should the flush have just ended by itself, the
            // cancellation falls on the next flush, which the closing connection never makes.
            _output.CancelPendingFlush();
        }
    }

    /// <summary>
    /// Stops watching; false when what is held had already gone past the limit (the flush was cancelled, or the
    /// cancellation falls on the next one), so the connection must close. Deciding on <see cref="Exceeded"/> and then
    /// stopping left a window: a reply arriving in between cancelled the next flush of a connection judged within the
    /// limit, which then closed as if its client had gone.
    /// </summary>
    public bool StopWatching()
    {
        var state = Interlocked.CompareExchange(ref _state, Stopped, Watching);
        return state != Over;
    }

    public void Dispose() => StopWatching();
}
