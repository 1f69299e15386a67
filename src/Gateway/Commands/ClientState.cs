using Dcache.Gateway.Resp;

namespace Dcache.Gateway.Commands;

/// <summary>What Redis keeps per connection and this gateway honours: protocol, name, auth, READONLY, subscriptions.</summary>
internal sealed class ClientState
{
    public ClientState(long id, string remoteAddress, string localAddress, long connectedAtMs)
    {
        Id = id;
        RemoteAddress = remoteAddress;
        LocalAddress = localAddress;
        ConnectedAtMs = connectedAtMs;
        LastCommandAtMs = connectedAtMs;
    }

    /// <summary>CLIENT ID: unique and increasing per gateway process, like Redis's.</summary>
    public long Id { get; }

    public string RemoteAddress { get; }

    public string LocalAddress { get; }

    public long ConnectedAtMs { get; }

    public long LastCommandAtMs { get; set; }

    public string LastCommandName { get; set; } = "NULL";

    public RespProtocol Protocol { get; set; } = RespProtocol.Resp2;

    /// <summary>CLIENT SETNAME / HELLO SETNAME; null when unset.</summary>
    public string? Name { get; set; }

    public string? LibraryName { get; set; }

    public string? LibraryVersion { get; set; }

    public bool Authenticated { get; set; }

    /// <summary>READONLY: this connection's reads are served from a replica's local state (possibly stale).</summary>
    public bool ReadOnly { get; set; }

    /// <summary>SELECT: only database 0 exists.</summary>
    public int Database => 0;

    /// <summary>SUBSCRIBE channels; created on first use (rare: only StackExchange.Redis's config channel in practice).</summary>
    public HashSet<string>? Channels { get; set; }

    public HashSet<string>? Patterns { get; set; }

    /// <summary>
    /// A WATCH was refused since the last EXEC, DISCARD or UNWATCH: the client counts on a check this gateway cannot make,
    /// so its next EXEC is refused rather than applied unchecked.
    /// </summary>
    public bool WatchRefused { get; set; }

    /// <summary>The commands queued since MULTI; null outside MULTI.</summary>
    public QueuedTransaction? Transaction { get; set; }

    public int SubscriptionCount => (Channels?.Count ?? 0) + (Patterns?.Count ?? 0);

    /// <summary>RESP2 connections with subscriptions accept only pub/sub commands, PING and QUIT, as in Redis.</summary>
    public bool InSubscriberContext => Protocol == RespProtocol.Resp2 && SubscriptionCount > 0;
}
