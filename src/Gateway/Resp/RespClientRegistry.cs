using System.Collections.Concurrent;
using Dcache.Gateway.Commands;

namespace Dcache.Gateway.Resp;

/// <summary>
/// The gateway's connected clients, shared by every <see cref="RespConnectionHandler"/> of the process (register it as a
/// singleton): enforces maxclients, hands out CLIENT IDs, and feeds INFO and CLIENT LIST.
/// </summary>
public sealed class RespClientRegistry
{
    private readonly ConcurrentDictionary<long, ClientState> _clients = new();
    private long _lastClientId;
    private int _connected;
    private long _connectionsReceived;
    private long _connectionsRejected;
    private long _commandsProcessed;

    public int ConnectedClients => Volatile.Read(ref _connected);

    public long ConnectionsReceived => Interlocked.Read(ref _connectionsReceived);

    public long ConnectionsRejected => Interlocked.Read(ref _connectionsRejected);

    public long CommandsProcessed => Interlocked.Read(ref _commandsProcessed);

    // The counts at the last CONFIG RESETSTAT: INFO reports the counts since, as Redis does, while the counts themselves
    // (which the metrics read) never go back.
    private long _connectionsReceivedAtReset;
    private long _connectionsRejectedAtReset;
    private long _commandsProcessedAtReset;

    /// <summary>INFO's total_connections_received: since the last CONFIG RESETSTAT.</summary>
    public long ConnectionsReceivedSinceReset => ConnectionsReceived - Interlocked.Read(ref _connectionsReceivedAtReset);

    /// <summary>INFO's rejected_connections: since the last CONFIG RESETSTAT.</summary>
    public long ConnectionsRejectedSinceReset => ConnectionsRejected - Interlocked.Read(ref _connectionsRejectedAtReset);

    /// <summary>INFO's total_commands_processed: since the last CONFIG RESETSTAT.</summary>
    public long CommandsProcessedSinceReset => CommandsProcessed - Interlocked.Read(ref _commandsProcessedAtReset);

    /// <summary>CONFIG RESETSTAT: INFO's counts start again from 0.</summary>
    internal void ResetStats()
    {
        Interlocked.Exchange(ref _connectionsReceivedAtReset, ConnectionsReceived);
        Interlocked.Exchange(ref _connectionsRejectedAtReset, ConnectionsRejected);
        Interlocked.Exchange(ref _commandsProcessedAtReset, CommandsProcessed);
    }

    /// <summary>Takes a client slot; false (and no slot) when <paramref name="maxClients"/> are already connected.</summary>
    internal bool TryAcquireSlot(int maxClients)
    {
        if (Interlocked.Increment(ref _connected) > maxClients)
        {
            Interlocked.Decrement(ref _connected);
            Interlocked.Increment(ref _connectionsRejected);
            return false;
        }

        // As Redis's total_connections_received: accepted connections only; refused ones count as rejected.
        Interlocked.Increment(ref _connectionsReceived);
        return true;
    }

    internal void ReleaseSlot() => Interlocked.Decrement(ref _connected);

    internal long NextClientId() => Interlocked.Increment(ref _lastClientId);

    internal void Add(ClientState client) => _clients[client.Id] = client;

    internal void Remove(ClientState client) => _clients.TryRemove(client.Id, out _);

    internal void CountCommands(int count) => Interlocked.Add(ref _commandsProcessed, count);

    /// <summary>A snapshot of the connected clients in id order (CLIENT LIST; not a hot path).</summary>
    internal List<ClientState> Snapshot()
    {
        var clients = new List<ClientState>(_clients.Values);
        clients.Sort(static (a, b) => a.Id.CompareTo(b.Id));
        return clients;
    }
}
