using Dcache.Gateway.Cluster;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;
using Google.Protobuf;

namespace Dcache.Gateway.Commands;

/// <summary>
/// MULTI, EXEC, DISCARD, WATCH and UNWATCH, and the queuing between MULTI and EXEC, with Redis 7.0's replies and error
/// texts. EXEC sends the queued commands to the cluster as one write (a TransactionRequest), which the cluster applies in
/// one log entry: no other command's effect lands between them on any replica. WATCH reads its keys (linearizably) and
/// remembers, per key, the applied index the read was served at and whether the key was live; EXEC's write carries those,
/// and the cluster applies nothing and answers nil when one changed since (docs/protocol.md, docs/architecture.md).
/// </summary>
internal static class TransactionCommands
{
    public const string ExecAbort = "EXECABORT Transaction discarded because of previous errors.";
    public const string NotAllowed = "ERR Command not allowed inside a transaction";
    public const string Nested = "ERR MULTI calls can not be nested";
    public const string ExecWithoutMulti = "ERR EXEC without MULTI";
    public const string DiscardWithoutMulti = "ERR DISCARD without MULTI";
    public const string WatchInsideMulti = "ERR WATCH inside MULTI is not allowed";

    /// <summary>
    /// What a command queued in MULTI takes in memory besides its arguments' bytes (its request, offsets and slot), and
    /// each of its arguments: counted against Resp:MaxRequestBytes with them, so that the limit bounds memory.
    /// </summary>
    public const int QueuedCommandCost = 64;

    public const int QueuedArgumentCost = 8;
    public static string WatchTooLarge(long maxRequestBytes) =>
        $"ERR too many watched keys: they would take more than {maxRequestBytes} bytes on this connection (Resp:MaxRequestBytes); UNWATCH, EXEC or DISCARD forgets them";

    public const string ExecAfterWatch = "EXECABORT Transaction discarded because of: a WATCH before it failed, so the watched keys cannot be checked";

    private static readonly Reply QueuedReply = Replies.Bulk("QUEUED");

    /// <summary>The connection commands a transaction may queue: they answer from the connection alone, at EXEC.</summary>
    private static readonly HashSet<string> QueueableConnectionCommands = new(StringComparer.Ordinal)
    {
        "ping", "echo", "time", "select", "readonly", "readwrite", "unwatch",
        "client|id", "client|getname", "client|setname", "client|info", "client|setinfo",
    };

    /// <summary>
    /// What the connection answers at once for a request while the client is in MULTI (queued, refused, or its error), or
    /// null when the request runs as usual: outside MULTI, and for MULTI, EXEC, DISCARD, WATCH, QUIT and RESET inside it.
    /// <paramref name="error"/> is the dispatcher's refusal of the request, if any: inside MULTI it marks the transaction
    /// failed, as Redis's rejectCommand does, and a refused EXEC ends the transaction with EXECABORT, in MULTI or not.
    /// </summary>
    public static PendingReply? Intercept(CommandContext context, CommandSpec? spec, RespRequest request, string? error)
    {
        var client = context.Client;
        if (error is not null && spec?.Name == "exec")
        {
            client.Transaction = null;
            client.Unwatch();
            return PendingReply.Error("EXECABORT Transaction discarded because of: " + (error.StartsWith("ERR ", StringComparison.Ordinal) ? error[4..] : error));
        }

        if (client.Transaction is not { } transaction)
        {
            return null;
        }

        if (error is not null)
        {
            transaction.Failed = true;
            return PendingReply.Error(error);
        }

        if (spec!.Name is "multi" or "exec" or "discard" or "watch" or "quit" or "reset")
        {
            return null;
        }

        if (!MayQueue(spec))
        {
            transaction.Failed = true;
            return PendingReply.Error(NotAllowed);
        }

        if (!transaction.TryAdd(spec, request, context.Options.MaxRequestBytes))
        {
            transaction.Failed = true;
            return PendingReply.Error($"ERR transaction too large: its queued commands exceed {context.Options.MaxRequestBytes} bytes (Resp:MaxRequestBytes)");
        }

        return PendingReply.Of(QueuedReply, ReplyShape.Status);
    }

    /// <summary>
    /// True for the commands a transaction can carry: every cache command the cluster can apply in one step (the writes,
    /// the key reads and DBSIZE), and the connection commands that need no cluster. KEYS, SCAN and RANDOMKEY (long or
    /// node-local reads), INFO, HELLO, AUTH, the pub/sub commands and the server commands are refused.
    /// </summary>
    public static bool MayQueue(CommandSpec spec) =>
        (spec.Flags & (CommandFlags.Write | CommandFlags.Read)) != 0
        || spec.Name == "dbsize"
        || QueueableConnectionCommands.Contains(spec.Name);

    public static PendingReply Multi(CommandContext context, RespRequest request)
    {
        if (context.Client.Transaction is not null)
        {
            return PendingReply.Error(Nested);
        }

        context.Client.Transaction = new QueuedTransaction();
        return PendingReply.Of(Replies.Ok);
    }

    public static PendingReply Discard(CommandContext context, RespRequest request)
    {
        if (context.Client.Transaction is null)
        {
            return PendingReply.Error(DiscardWithoutMulti);
        }

        context.Client.Transaction = null;
        context.Client.Unwatch();
        return PendingReply.Of(Replies.Ok);
    }

    /// <summary>
    /// WATCH key [key ...]: reads the keys linearizably (whatever READONLY says: a stale read would only make EXEC abort
    /// more) and, when the reply arrives and before it is answered, remembers each key not watched yet with the applied
    /// index of the read and whether it was live. The first WATCH on a cluster whose key revisions have not started yet
    /// starts them (a watched transaction with nothing in it) and reads again. A WATCH that fails marks the connection,
    /// so that its next EXEC is refused: a client that goes on to MULTI/EXEC after a failed WATCH (StackExchange.Redis
    /// does, for a transaction's conditions) would otherwise have its transaction applied without the check it asked for.
    /// </summary>
    public static PendingReply Watch(CommandContext context, RespRequest request)
    {
        if (context.Client.Transaction is not null)
        {
            return PendingReply.Error(WatchInsideMulti);
        }

        var read = new WatchRequest();
        for (var i = 1; i < request.Count; i++)
        {
            // Copied: a watched key outlives its request, and a view into it would keep the whole request's buffer alive
            // (a WATCH of a large key and another of a short one pinned the large one's buffer again).
            read.Keys.Add(ByteString.CopyFrom(request.Memory(i).Span));
        }

        var watchedBytes = context.Client.WatchedBytes + context.Client.WatchBytesToAdd(read.Keys);
        if (watchedBytes > context.Options.MaxRequestBytes)
        {
            // Bounded as MULTI's queue is: a connection cannot make the gateway hold keys without end. Refused as a WATCH
            // whose read failed, so that the EXEC after it cannot apply without the check its client asked for.
            context.Client.RecordWatch(context.Client.WatchGeneration, null);
            return PendingReply.Error(WatchTooLarge(context.Options.MaxRequestBytes));
        }

        var command = new Command { Watch = read, Consistency = ReadConsistency.Linearizable };
        return new PendingReply(null, WatchAsync(context, read, context.Client.WatchGeneration, context.Start(command, ReadMode.Linearizable)));
    }

    private static async Task<Reply> WatchAsync(CommandContext context, WatchRequest read, int generation, Task<Reply> sent)
    {
        try
        {
            return await WatchReadAsync(context, read, generation, sent).ConfigureAwait(false);
        }
        catch
        {
            // The connection answers the WATCH with an error either way; without this the next EXEC would not be refused
            // and would apply with no check at all.
            context.Client.RecordWatch(generation, null);
            throw;
        }
    }

    private static async Task<Reply> WatchReadAsync(CommandContext context, WatchRequest read, int generation, Task<Reply> sent)
    {
        // The read was queued just now; the calls it may take after it share its deadline.
        var began = System.Diagnostics.Stopwatch.GetTimestamp();
        var reply = await sent.ConfigureAwait(false);
        if (reply.ResultCase == Reply.ResultOneofCase.Nil)
        {
            // No format 8 entry applied yet: propose one (with no session; applying it twice changes nothing) and read again.
            var start = new ClusterCall(new Command { Consistency = ReadConsistency.Linearizable, Transaction = new TransactionRequest { Watched = true } }, ReadMode.Linearizable) { DeadlineStartedAt = began };
            context.Cluster.ExecuteAll([start], context.ConnectionEnded);
            var started = await start.Reply.ConfigureAwait(false);
            if (started.ResultCase != Reply.ResultOneofCase.Array)
            {
                context.Client.RecordWatch(generation, null);
                return started;
            }

            var again = new ClusterCall(new Command { Consistency = ReadConsistency.Linearizable, Watch = read }, ReadMode.Linearizable) { DeadlineStartedAt = began };
            context.Cluster.ExecuteAll([again], context.ConnectionEnded);
            reply = await again.Reply.ConfigureAwait(false);
        }

        if (reply.ResultCase != Reply.ResultOneofCase.Array || reply.Array.Items.Count != read.Keys.Count + 1)
        {
            context.Client.RecordWatch(generation, null);
            return reply.ResultCase is Reply.ResultOneofCase.Failure or Reply.ResultOneofCase.Error
                ? reply
                : Replies.Error("ERR WATCH got an unexpected reply from the cluster");
        }

        var watchedAt = (ulong)reply.Array.Items[0].Integer;
        context.Client.RecordWatch(generation, read.Keys.Select((key, i) => new WatchedKey { Key = key, WatchedAt = watchedAt, Live = reply.Array.Items[i + 1].Integer == 1 }));
        return Replies.Ok;
    }

    /// <summary>UNWATCH: forgets every watched key (and a failed WATCH).</summary>
    public static PendingReply Unwatch(CommandContext context, RespRequest request)
    {
        context.Client.Unwatch();
        return PendingReply.Of(Replies.Ok);
    }

    /// <summary>
    /// EXEC: runs each queued command's handler now, as if it had just arrived, but with its cluster command captured
    /// instead of sent (<see cref="CommandContext.BeginTransaction"/>); the captured commands go to the cluster as one
    /// write, and each handler's reply is then answered from its slot of the transaction's reply. A handler that answers
    /// by itself (a syntax error, PING) keeps its own reply in its slot, as Redis answers it when EXEC runs the command.
    /// </summary>
    public static PendingReply Exec(CommandContext context, RespRequest request)
    {
        var transaction = context.Client.Transaction;
        if (transaction is null)
        {
            return PendingReply.Error(ExecWithoutMulti);
        }

        try
        {
            return RunQueued(context, transaction);
        }
        finally
        {
            // Only now: while EXEC runs its commands the connection is still in the transaction, as in Redis, where a
            // queued CLIENT INFO shows flags=x and multi=N.
            context.Client.Transaction = null;
        }
    }

    private static PendingReply RunQueued(CommandContext context, QueuedTransaction transaction)
    {
        var watchRefused = context.Client.WatchRefused;
        var watches = context.Client.Watches;
        context.Client.Unwatch();
        if (transaction.Failed)
        {
            return PendingReply.Error(ExecAbort);
        }

        if (watchRefused)
        {
            return PendingReply.Error(ExecAfterWatch);
        }

        var slots = new PendingReply[transaction.Commands.Count];
        var shapes = new ReplyShape[slots.Length];
        context.BeginTransaction();
        List<CapturedCommand> captured;
        try
        {
            for (var i = 0; i < slots.Length; i++)
            {
                var (spec, queued) = transaction.Commands[i];
                slots[i] = spec.Handler(context, queued);
                shapes[i] = slots[i].Shape;
            }
        }
        finally
        {
            captured = context.EndTransaction();
        }

        context.Registry.CountCommands(slots.Length);

        if (captured.Count == 0 && watches is null)
        {
            return new PendingReply(null, AssembleAsync(null, slots, captured), ItemShapes: shapes);
        }

        // With watches, even a transaction with nothing for the cluster goes there: its answer, nil or not, is decided there.
        var write = new TransactionRequest { Watched = watches is not null };
        if (watches is not null)
        {
            write.Watches.AddRange(watches.Values);
        }

        foreach (var command in captured)
        {
            write.Commands.Add(command.Command);
        }

        var sent = context.Write(new Command { Transaction = write });
        return sent with { Pending = AssembleAsync(sent.Pending, slots, captured), Shape = ReplyShape.NilArray, ItemShapes = shapes };
    }

    /// <summary>
    /// The EXEC reply: the transaction's reply items handed to the captured commands in order, then every slot's reply.
    /// When the cluster did not apply the transaction (or cannot say whether it did), that failure is the EXEC reply; when
    /// a watched key changed, nil (rendered as the nil array).
    /// </summary>
    private static async Task<Reply> AssembleAsync(Task<Reply>? transaction, PendingReply[] slots, List<CapturedCommand> captured)
    {
        if (transaction is not null)
        {
            var reply = await transaction.ConfigureAwait(false);
            if (reply.ResultCase != Reply.ResultOneofCase.Array || reply.Array.Items.Count != captured.Count)
            {
                foreach (var command in captured)
                {
                    command.Reply.TrySetResult(reply);
                }

                return reply;
            }

            for (var i = 0; i < captured.Count; i++)
            {
                captured[i].Reply.TrySetResult(reply.Array.Items[i]);
            }
        }

        var items = new List<Reply>(slots.Length);
        foreach (var slot in slots)
        {
            items.Add(slot.Immediate ?? await slot.Pending!.ConfigureAwait(false));
        }

        return Replies.Array(items);
    }
}

/// <summary>The commands a connection queued since MULTI, and whether one was refused (then EXEC answers EXECABORT).</summary>
internal sealed class QueuedTransaction
{
    private long _bytes;

    public List<(CommandSpec Spec, RespRequest Request)> Commands { get; } = [];

    public bool Failed { get; set; }

    /// <summary>Queues the request unless the queue would then take more than <paramref name="maxBytes"/> (arguments and overheads).</summary>
    public bool TryAdd(CommandSpec spec, RespRequest request, long maxBytes)
    {
        var cost = request.TotalLength + TransactionCommands.QueuedCommandCost + ((long)TransactionCommands.QueuedArgumentCost * request.Count);
        if (_bytes + cost > maxBytes)
        {
            return false;
        }

        _bytes += cost;
        Commands.Add((spec, request));
        return true;
    }
}

/// <summary>A queued command's cluster command, captured at EXEC, and where its slot of the transaction's reply goes.</summary>
internal sealed record CapturedCommand(Command Command, TaskCompletionSource<Reply> Reply);
