using Dcache.Gateway.Cluster;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Commands;

/// <summary>Everything a command handler may use: its connection's state, the cluster, the limits, the clock.</summary>
internal sealed class CommandContext
{
    private readonly List<ClusterCall> _queuedCalls = [];

    // While EXEC runs the queued commands' handlers: their cluster commands, captured instead of sent.
    private List<CapturedCommand>? _transaction;

    public CommandContext(
        ClientState client,
        ICacheCluster cluster,
        RespOptions options,
        RespClientRegistry registry,
        WriteSessionPool sessions,
        TimeProvider time,
        CancellationToken connectionEnded)
    {
        Sessions = sessions;
        Client = client;
        Cluster = cluster;
        Options = options;
        Registry = registry;
        Time = time;
        ConnectionEnded = connectionEnded;
    }

    public ClientState Client { get; }

    public ICacheCluster Cluster { get; }

    public RespOptions Options { get; }

    public RespClientRegistry Registry { get; }

    public TimeProvider Time { get; }

    /// <summary>Cancelled when the connection's loop has ended (not when the client only shut down its sending side).</summary>
    public CancellationToken ConnectionEnded { get; }

    public WriteSessionPool Sessions { get; }

    public long NowMs => Time.GetUtcNow().ToUnixTimeMilliseconds();

    public ReadMode ReadMode => Client.ReadOnly ? ReadMode.Local : ReadMode.Linearizable;

    /// <summary>Sends a read: linearizable, or local when the connection sent READONLY.</summary>
    public PendingReply Read(Command command, ReplyShape shape = ReplyShape.Default)
    {
        if (_transaction is not null)
        {
            return Capture(command, shape, isWrite: false);
        }

        var mode = ReadMode;
        command.Consistency = mode == ReadMode.Local ? ReadConsistency.Local : ReadConsistency.Linearizable;
        return new PendingReply(null, Start(command, mode), shape);
    }

    /// <summary>Sends a write under a session of its own (see <see cref="WriteSessionPool"/>).</summary>
    public PendingReply Write(Command command)
    {
        if (_transaction is not null)
        {
            return Capture(command, ReplyShape.Default, isWrite: true);
        }

        var session = Sessions.Rent();
        command.ClientId = session.ClientId;
        command.Sequence = session.NextSequence();
        command.Consistency = ReadConsistency.Linearizable;
        command.SessionMustExist = session.MustExistFor(command.Sequence);
        var reply = session.Registration == SessionRegistration.Unasked
            ? RegisterThenWriteAsync(session, command)
            : Start(command, ReadMode.Linearizable);
        return new PendingReply(null, reply, Session: session, IsWrite: true, SessionCommand: command);
    }

    /// <summary>
    /// From now until <see cref="EndTransaction"/>, <see cref="Read"/> and <see cref="Write"/> capture their command for
    /// EXEC's transaction instead of sending it; the reply each returns is answered from the command's slot of the
    /// transaction's reply.
    /// </summary>
    public void BeginTransaction() => _transaction = [];

    /// <summary>The commands captured since <see cref="BeginTransaction"/>, in order; sending goes back to normal.</summary>
    public List<CapturedCommand> EndTransaction()
    {
        var captured = _transaction ?? [];
        _transaction = null;
        return captured;
    }

    private PendingReply Capture(Command command, ReplyShape shape, bool isWrite)
    {
        var slot = new TaskCompletionSource<Reply>(TaskCreationOptions.RunContinuationsAsynchronously);
        _transaction!.Add(new CapturedCommand(command, slot));
        return new PendingReply(null, slot.Task, shape, IsWrite: isWrite);
    }

    /// <summary>
    /// Registers a new session on the cluster, then sends its first write, which can then say that its session must
    /// exist: should the session expire before a retry of that write arrives, the retry is refused instead of starting
    /// the session again and applying twice. A registration that fails leaves the write unsent (not applied).
    /// </summary>
    private async Task<Reply> RegisterThenWriteAsync(WriteSession session, Command command)
    {
        // One deadline for both: the client waits for the write, not for each call the gateway makes for it.
        var began = System.Diagnostics.Stopwatch.GetTimestamp();
        var registration = new ClusterCall(
            new Command { ClientId = session.ClientId, Consistency = ReadConsistency.Linearizable, RegisterSession = new RegisterSessionRequest() },
            ReadMode.Linearizable);
        Cluster.ExecuteAll([registration], ConnectionEnded);
        var registered = await registration.Reply.ConfigureAwait(false);
        switch (registered)
        {
            case { ResultCase: Reply.ResultOneofCase.Ok }:
                session.Registration = SessionRegistration.Registered;
                break;
            case { ResultCase: Reply.ResultOneofCase.Nil } or { Failure.Kind: FailureKind.InvalidRequest }:
                // A member's build predates registrations (nil), or the node does (it does not know the request).
                session.Registration = SessionRegistration.NotRegistered;
                break;
            case { Failure.Kind: FailureKind.Unavailable }:
                return registered; // "not applied: ..." holds for the write too: it was never sent
            default:
                // Whatever became of the registration, the write itself was never sent.
                var detail = registered.Failure is { Kind: FailureKind.OutcomeUnknown }
                    ? "the cluster did not confirm a new write session in time"
                    : $"a new write session was refused: {registered.Failure?.Message ?? registered.Error}";
                return new Reply { Failure = new Failure { Kind = FailureKind.Unavailable, Message = "not applied: " + detail } };
        }

        command.SessionMustExist = session.MustExistFor(command.Sequence);
        var write = new ClusterCall(command, ReadMode.Linearizable) { DeadlineStartedAt = began };
        Cluster.ExecuteAll([write], ConnectionEnded);
        return await write.Reply.ConfigureAwait(false);
    }

    /// <summary>
    /// Queues a cluster call; <see cref="SendQueuedCalls"/> hands everything queued to the cluster as one batch (the
    /// connection does that before it waits for any reply).
    /// </summary>
    public Task<Reply> Start(Command command, ReadMode mode)
    {
        var call = new ClusterCall(command, mode);
        _queuedCalls.Add(call);
        return call.Reply;
    }

    /// <summary>Starts every queued call together; a synchronous throw fails them, so they are answered like any failure.</summary>
    public void SendQueuedCalls()
    {
        if (_queuedCalls.Count == 0)
        {
            return;
        }

        try
        {
            Cluster.ExecuteAll(_queuedCalls, ConnectionEnded);
        }
        catch (Exception exception)
        {
            foreach (var call in _queuedCalls)
            {
                call.Fail(exception);
            }
        }
        finally
        {
            _queuedCalls.Clear();
        }
    }
}
