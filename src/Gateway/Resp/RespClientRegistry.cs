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
