using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using Dcache.Gateway.Commands;
using Dcache.Protocol.Cache;
using Microsoft.Extensions.Logging;

namespace Dcache.Gateway.Resp;

/// <summary>
/// One client connection: read what arrived, parse every complete request, start them (concurrently where their
/// keys allow, see <see cref="PipelineWave"/>), write the replies in request order, flush once. Only this loop
/// touches the connection's state, so nothing here needs a lock.
/// </summary>
internal sealed class RespConnection
{
    // Replies are handed to the transport in chunks of about this size, so a long batch streams out and a client
    // that stops reading stalls its own connection instead of growing the gateway's memory.
    private const int FlushThreshold = 64 * 1024;

    // The metric name of a request that names no known command.
    private const string UnknownCommandName = "unknown";

    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly RespOptions _options;
    private readonly RespClientRegistry _registry;
    private readonly ILogger _logger;
    private readonly string _connectionId;
    private readonly Action _abort;
    private readonly RespParser _parser;
    private readonly CommandContext _context;
    private readonly List<RespRequest> _batch = [];
    private readonly List<QueuedReply> _queue = [];
    private readonly PipelineWave _wave = new();

    /// <param name="abort">Closes the connection at once, dropping what is buffered for the client.</param>
    public RespConnection(IDuplexPipe transport, string connectionId, Action abort, CommandContext context, RespClientRegistry registry, ILogger logger)
    {
        _input = transport.Input;
        _output = transport.Output;
        _connectionId = connectionId;
        _abort = abort;
        _context = context;
        _options = context.Options;
        _registry = registry;
        _logger = logger;
        _parser = new RespParser(_options);
    }

    private ClientState Client => _context.Client;

    // Redis's `timeout`: null when off. Waits for the next request and flushes the client does not take count as idle.
    private IdleTimeout? _idle;

    /// <summary>Serves the connection until the client leaves, sends QUIT, breaks the protocol or exceeds a limit.</summary>
    public async Task RunAsync()
    {
        using var idle = _idle = _options.IdleTimeoutSeconds > 0 ? new IdleTimeout(TimeSpan.FromSeconds(_options.IdleTimeoutSeconds), _context.Time) : null;
        while (true)
        {
            ReadResult result;
            if (idle is null || Client.SubscriptionCount > 0)
            {
                // As in Redis, a subscribed connection is never timed out: it is there to listen.
                result = await _input.ReadAsync().ConfigureAwait(false);
            }
            else
            {
                // This wait counts as idle, and so does a flush the client takes nothing of for as long (FlushAsync); a
                // connection whose commands are in flight, or whose replies the client is slow but not stopped to take,
                // is busy.
                try
                {
                    result = await _input.ReadAsync(idle.Start()).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (idle.Expired)
                {
                    CloseIdle();
                    return;
                }
                finally
                {
                    idle.Stop();
                }
            }

            var buffer = result.Buffer;
            var (protocolError, moreBuffered) = ParseBatch(ref buffer);
            if (moreBuffered)
            {
                // Complete requests remain: consume what was parsed but do not mark the rest examined, so the next
                // read returns at once.
                _input.AdvanceTo(buffer.Start);
            }
            else
            {
                _input.AdvanceTo(buffer.Start, buffer.End);
            }

            if (_batch.Count > 0)
            {
                var keepOpen = await ExecuteBatchAsync().ConfigureAwait(false);
                _batch.Clear();
                if (!keepOpen)
                {
                    await FlushAsync().ConfigureAwait(false);
                    return;
                }
            }

            if (protocolError is not null)
            {
                RespLog.ProtocolError(_logger, _connectionId, Client.RemoteAddress, protocolError);
                RespMetrics.ConnectionClosedByGateway("protocol_error");
                RespWriter.WriteError(_output, protocolError);
                await FlushAsync().ConfigureAwait(false);
                return;
            }

            if (await FlushAsync().ConfigureAwait(false) is not { } flush)
            {
                return;
            }

            if (flush.IsCompleted || flush.IsCanceled || ((result.IsCompleted || result.IsCanceled) && !moreBuffered))
            {
                RespLog.ConnectionClosed(_logger, _connectionId, Client.RemoteAddress, "the client closed the connection");
                return;
            }
        }
    }

    /// <summary>Parses up to one pipeline's worth of requests; reports a protocol error and whether more may be buffered.</summary>
    private (string? ProtocolError, bool MoreBuffered) ParseBatch(ref ReadOnlySequence<byte> buffer)
    {
        // Until the connection authenticates, take one request at a time: an AUTH earlier in the pipeline must lift
        // the unauthenticated limits before the next request is parsed, as in Redis.
        var mustAuthenticate = _options.AuthenticationRequired && !Client.Authenticated;
        var depth = mustAuthenticate ? 1 : _options.MaxPipelineDepth;
        _parser.AuthenticationRequired = mustAuthenticate;
        while (_batch.Count < depth)
        {
            switch (_parser.TryParse(ref buffer, out var request))
            {
                case RespParseStatus.Request:
                    _batch.Add(request!);
                    if (_options.AuthenticationRequired && request!.Count == 1 && CommandTable.Find(request[0]) is { Name: "reset" })
                    {
                        // RESET makes the connection unauthenticated again: the requests after it are parsed once it ran,
                        // under the unauthenticated limits, as in Redis.
                        return (null, !buffer.IsEmpty);
                    }

                    break;
                case RespParseStatus.ProtocolError:
                    return (_parser.Error, false);
                default:
                    return (null, false);
            }
        }

        return (null, !buffer.IsEmpty);
    }

    /// <summary>Starts every request of the batch and writes their replies in order; false when the connection must close.</summary>
    private async Task<bool> ExecuteBatchAsync()
    {
        var keepOpen = true;
        var trackConflicts = _batch.Count > 1;
        var executed = 0;
        foreach (var request in _batch)
        {
            var startTimestamp = Stopwatch.GetTimestamp();
            var spec = CommandDispatcher.Resolve(_context, request, out var error);
            if (TransactionCommands.Intercept(_context, spec, request, error) is { } intercepted)
            {
                // Queued inside MULTI (or refused there): it reaches the cluster, if at all, with EXEC.
                _queue.Add(new QueuedReply(intercepted, Client.Protocol, spec?.Name ?? UnknownCommandName, startTimestamp));
                continue;
            }

            if (spec is null || error is not null)
            {
                // Resolve names the error whenever it returns no command.
                _queue.Add(new QueuedReply(PendingReply.Error(error!), Client.Protocol, spec?.Name ?? UnknownCommandName, startTimestamp));
                continue;
            }

            if (trackConflicts && spec.TouchesCluster)
            {
                if (_wave.ConflictsWith(spec, request))
                {
                    if (!await WriteQueuedRepliesAsync().ConfigureAwait(false))
                    {
                        return false;
                    }

                    _wave.Clear();
                }

                _wave.Add(spec, request);
            }

            // As Redis's total_commands_processed: the commands that ran, not those refused or queued by MULTI (EXEC counts
            // those as it runs them).
            executed++;
            var reply = CommandDispatcher.Execute(_context, spec, request);

            // Captured after the command ran: HELLO 3 answers in RESP3 already.
            _queue.Add(new QueuedReply(reply, Client.Protocol, spec.Name, startTimestamp));
            if (reply.CloseAfterReply)
            {
                keepOpen = false;
                break;
            }
        }

        _wave.Clear();
        _registry.CountCommands(executed);
        return await WriteQueuedRepliesAsync().ConfigureAwait(false) && keepOpen;
    }

    /// <summary>Waits for each queued reply in order and writes it; false when the output buffer limit was hit.</summary>
    private async Task<bool> WriteQueuedRepliesAsync()
    {
        _context.SendQueuedCalls();
        try
        {
            for (var index = 0; index < _queue.Count; index++)
            {
                var queued = _queue[index];
                var pending = queued.Reply;
                var reply = pending.Immediate;
                var settled = true;
                if (reply is null)
                {
                    try
                    {
                        reply = await pending.Pending!.ConfigureAwait(false);
                        settled = IsSettled(reply);
                    }
                    catch (Exception exception)
                    {
                        if (!(exception is OperationCanceledException && _context.ConnectionEnded.IsCancellationRequested))
                        {
                            // A cancellation because the client left is expected; anything else breaks the cluster client's contract.
                            RespLog.ClusterCallThrew(_logger, queued.CommandName, exception);
                        }

                        reply = Replies.Error(ClusterErrors.Describe(exception, pending.IsWrite));
                        settled = false;
                    }
                }

                if (pending.Session is { } session && settled && pending.SessionCommand?.ClientId == session.ClientId)
                {
                    // A session whose write may still apply later is dropped rather than reused, and so is one the
                    // cluster had forgotten (the cluster client then sent the write under a new session id).
                    _context.Sessions.Return(session);
                }

                var unflushed = _output.CanGetUnflushedBytes ? _output.UnflushedBytes : 0;
                if (unflushed + ReplyRenderer.EstimateSize(reply) > _options.MaxOutputBufferBytes)
                {
                    CloseOverOutputLimit();
                    return false;
                }

                ReplyRenderer.Write(_output, reply, pending.Shape, queued.Protocol, pending.IsWrite, pending.ItemShapes);
                RespMetrics.CommandAnswered(queued.CommandName, ResultOf(reply, pending.IsWrite), queued.StartTimestamp);
                if (_output.CanGetUnflushedBytes && _output.UnflushedBytes >= FlushThreshold && !await FlushWithinLimitAsync(index + 1).ConfigureAwait(false))
                {
                    return false;
                }
            }

            return true;
        }
        finally
        {
            _queue.Clear();
        }
    }

    /// <summary>
    /// Flushes what is written so far; false when the connection must close. A flush waits while the client is not taking
    /// replies, and meanwhile the replies of this batch from <paramref name="nextReply"/> on keep arriving from the
    /// cluster: they count against <see cref="RespOptions.MaxOutputBufferBytes"/> with what the flush holds, and past it
    /// the flush is given up and the connection closed, as a single reply past it does. Without this a client that
    /// pipelined large reads and stopped reading held up to a batch of replies here, whatever the limit.
    /// </summary>
    private async ValueTask<bool> FlushWithinLimitAsync(int nextReply)
    {
        var flushed = _output.CanGetUnflushedBytes ? _output.UnflushedBytes : 0;
        var flushing = FlushAsync();
        FlushResult? flush;
        if (flushing.IsCompleted)
        {
            flush = flushing.Result;
        }
        else
        {
            using var held = new HeldReplies(_output, _options.MaxOutputBufferBytes, flushed);
            for (var i = nextReply; i < _queue.Count && !held.Exceeded; i++)
            {
                held.Watch(_queue[i].Reply);
            }

            flush = await flushing.ConfigureAwait(false);
            if (!held.StopWatching() && flush is not null)
            {
                CloseOverOutputLimit();
                return false;
            }
        }

        return flush is { IsCompleted: false, IsCanceled: false };
    }

    /// <summary>
    /// Flushes what is written; null when the connection was closed because the client took none of it for the idle
    /// timeout. As in Redis, whose `timeout` counts from a client's last read or write: a client that stopped reading
    /// its replies is idle, and without this it held its connection, and the replies below the output buffer limit,
    /// for as long as it stayed connected.
    /// </summary>
    private async ValueTask<FlushResult?> FlushAsync()
    {
        var flushing = _output.FlushAsync();
        if (flushing.IsCompleted || _idle is not { } idle || Client.SubscriptionCount > 0)
        {
            return await flushing.ConfigureAwait(false);
        }

        try
        {
            return await flushing.AsTask().WaitAsync(idle.Start()).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (idle.Expired)
        {
            CloseIdle();
            _abort();
            return null;
        }
        finally
        {
            idle.Stop();
        }
    }

    private void CloseIdle()
    {
        RespLog.IdleTimeout(_logger, _connectionId, Client.RemoteAddress, _options.IdleTimeoutSeconds);
        RespMetrics.ConnectionClosedByGateway("idle_timeout");
    }

    /// <summary>
    /// Past the output buffer limit: the connection is aborted, dropping what is buffered for the client, as Redis does;
    /// flushing it first would wait for as long as the client does not read.
    /// </summary>
    private void CloseOverOutputLimit()
    {
        RespLog.OutputBufferLimitExceeded(_logger, _connectionId, Client.RemoteAddress, _options.MaxOutputBufferBytes);
        RespMetrics.ConnectionClosedByGateway("output_buffer_limit");
        _abort();
    }

    /// <summary>True when the write certainly applied or certainly did not, so its session may carry the next write.</summary>
    private static bool IsSettled(Reply reply) =>
        reply.ResultCase != Reply.ResultOneofCase.None
        && (reply.ResultCase != Reply.ResultOneofCase.Failure
            || reply.Failure.Kind is FailureKind.NotLeader or FailureKind.Unavailable or FailureKind.InvalidRequest);

    /// <summary>The metric result of a reply: a result, a command error, or a cluster error (not applied / unknown outcome).</summary>
    private static string ResultOf(Reply reply, bool isWrite) => reply.ResultCase switch
    {
        Reply.ResultOneofCase.Error when reply.Error.StartsWith(ClusterErrors.OutcomeUnknownPrefix, StringComparison.Ordinal) => RespMetrics.ResultOutcomeUnknown,
        Reply.ResultOneofCase.Error when reply.Error.StartsWith(ClusterErrors.TryAgainPrefix, StringComparison.Ordinal) => RespMetrics.ResultNotApplied,
        Reply.ResultOneofCase.Error => RespMetrics.ResultError,
        Reply.ResultOneofCase.Failure => reply.Failure.Kind switch
        {
            FailureKind.NotLeader or FailureKind.Unavailable => RespMetrics.ResultNotApplied,
            FailureKind.InvalidRequest => RespMetrics.ResultError,
            _ => isWrite ? RespMetrics.ResultOutcomeUnknown : RespMetrics.ResultNotApplied,
        },
        Reply.ResultOneofCase.None => isWrite ? RespMetrics.ResultOutcomeUnknown : RespMetrics.ResultNotApplied,
        _ => RespMetrics.ResultOk,
    };

    private readonly record struct QueuedReply(PendingReply Reply, RespProtocol Protocol, string CommandName, long StartTimestamp);
}
