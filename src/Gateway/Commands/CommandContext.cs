using Dcache.Gateway.Cluster;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Commands;

/// <summary>Everything a command handler may use: its connection's state, the cluster, the limits, the clock.</summary>
internal sealed class CommandContext
{
    public CommandContext(
        ClientState client,
        ICacheCluster cluster,
        RespOptions options,
        RespClientRegistry registry,
        TimeProvider time,
        CancellationToken connectionClosed)
    {
        Client = client;
        Cluster = cluster;
        Options = options;
        Registry = registry;
        Time = time;
        ConnectionClosed = connectionClosed;
    }

    public ClientState Client { get; }

    public ICacheCluster Cluster { get; }

    public RespOptions Options { get; }

    public RespClientRegistry Registry { get; }

    public TimeProvider Time { get; }

    public CancellationToken ConnectionClosed { get; }

    public WriteSessionPool Sessions { get; } = new();

    public long NowMs => Time.GetUtcNow().ToUnixTimeMilliseconds();

    public ReadMode ReadMode => Client.ReadOnly ? ReadMode.Local : ReadMode.Linearizable;

    /// <summary>Sends a read: linearizable, or local when the connection sent READONLY.</summary>
    public PendingReply Read(Command command, ReplyShape shape = ReplyShape.Default)
    {
        var mode = ReadMode;
        command.Consistency = mode == ReadMode.Local ? ReadConsistency.Local : ReadConsistency.Linearizable;
        return new PendingReply(null, Start(command, mode), shape);
    }

    /// <summary>Sends a write under a session of its own (see <see cref="WriteSessionPool"/>).</summary>
    public PendingReply Write(Command command)
    {
        var session = Sessions.Rent();
        command.ClientId = session.ClientId;
        command.Sequence = session.NextSequence();
        command.Consistency = ReadConsistency.Linearizable;
        return new PendingReply(null, Start(command, ReadMode.Linearizable), Session: session, IsWrite: true);
    }

    /// <summary>Starts a cluster call; a synchronous throw becomes a faulted task so it is answered like any failure.</summary>
    public Task<Reply> Start(Command command, ReadMode mode)
    {
        try
        {
            return Cluster.ExecuteAsync(command, mode, ConnectionClosed);
        }
        catch (Exception exception)
        {
            return Task.FromException<Reply>(exception);
        }
    }
}
