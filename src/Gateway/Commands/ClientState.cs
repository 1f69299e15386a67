using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;
using Google.Protobuf;

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

    /// <summary>When the connection's last request arrived (CLIENT LIST's idle).</summary>
    public long LastCommandAtMs { get; set; }

    /// <summary>The command the last request named, "NULL" when none it knows (CLIENT LIST's cmd).</summary>
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
    public HashSet<string>? Channels { get; private set; }

    public HashSet<string>? Patterns { get; private set; }

    /// <summary>The subscribed names' bytes and overheads: bounded like watched keys (Resp:MaxRequestBytes).</summary>
    public long SubscribedBytes { get; private set; }

    /// <summary>
    /// What a subscription takes besides its name's bytes (the name is held as a string, two bytes a character; its
    /// set entry): counted with them, so that the limit bounds memory, not only names.
    /// </summary>
    internal const int SubscriptionOverheadBytes = 64;

    private static long SubscriptionCost(string name) => (2L * name.Length) + SubscriptionOverheadBytes;

    /// <summary>The bytes subscribing to <paramref name="names"/> would add: those of names not subscribed yet, once each.</summary>
    public long SubscriptionBytesToAdd(IEnumerable<string> names, bool pattern)
    {
        var set = pattern ? Patterns : Channels;
        var added = new HashSet<string>(StringComparer.Ordinal);
        long bytes = 0;
        foreach (var name in names)
        {
            if (set?.Contains(name) != true && added.Add(name))
            {
                bytes += SubscriptionCost(name);
            }
        }

        return bytes;
    }

    public void Subscribe(string name, bool pattern)
    {
        var set = pattern ? Patterns ??= new HashSet<string>(StringComparer.Ordinal) : Channels ??= new HashSet<string>(StringComparer.Ordinal);
        if (set.Add(name))
        {
            SubscribedBytes += SubscriptionCost(name);
        }
    }

    public void Unsubscribe(string name, bool pattern)
    {
        if ((pattern ? Patterns : Channels)?.Remove(name) == true)
        {
            SubscribedBytes -= SubscriptionCost(name);
        }
    }

    public void UnsubscribeAll()
    {
        Channels = null;
        Patterns = null;
        SubscribedBytes = 0;
    }

    /// <summary>
    /// A WATCH failed since the last EXEC, DISCARD or UNWATCH (the cluster is still at log format 7, or the read failed):
    /// the client counts on a check that was not set up, so its next EXEC is refused rather than applied unchecked.
    /// </summary>
    public bool WatchRefused { get; private set; }

    /// <summary>
    /// The keys WATCHed since the last EXEC, DISCARD or UNWATCH, each as its first WATCH read it (a key watched again
    /// keeps its first read, as in Redis); null when none. Set when the WATCH's reply arrives, before it is answered.
    /// </summary>
    public Dictionary<ByteString, WatchedKey>? Watches { get; private set; }

    /// <summary>
    /// Counts <see cref="Unwatch"/> calls: a WATCH whose reply arrives after one that came later on the connection (an
    /// EXEC refused at once, which Redis makes forget the watches too) must not record its keys.
    /// </summary>
    public int WatchGeneration { get; private set; }

    // WATCH records its keys on the reply's thread; the connection's own thread forgets them.
    private readonly Lock _watchGate = new();

    /// <summary>Forgets the watches (EXEC, DISCARD, UNWATCH).</summary>
    public void Unwatch()
    {
        lock (_watchGate)
        {
            Watches = null;
            WatchedBytes = 0;
            WatchRefused = false;
            WatchGeneration++;
        }
    }

    /// <summary>The watched keys' bytes and overheads: bounded like a transaction's queued commands (Resp:MaxRequestBytes).</summary>
    public long WatchedBytes { get; private set; }

    /// <summary>
    /// What a watched key takes in memory besides its bytes (its ByteString and array, its table entry, its read): counted
    /// with them, so that the limit on watched keys bounds memory, not only names.
    /// </summary>
    internal const int WatchedKeyOverheadBytes = 96;

    private static long WatchedKeyCost(ByteString key) => key.Length + WatchedKeyOverheadBytes;

    /// <summary>The bytes <paramref name="keys"/> would add to <see cref="WatchedBytes"/>: those of keys not watched yet, once each.</summary>
    public long WatchBytesToAdd(IEnumerable<ByteString> keys)
    {
        lock (_watchGate)
        {
            var added = new HashSet<ByteString>();
            long bytes = 0;
            foreach (var key in keys)
            {
                if (Watches?.ContainsKey(key) != true && added.Add(key))
                {
                    bytes += WatchedKeyCost(key);
                }
            }

            return bytes;
        }
    }

    /// <summary>
    /// Records a WATCH's keys (or its failure, as <see cref="WatchRefused"/>) unless the watches were forgotten since the
    /// WATCH was sent (<paramref name="generation"/>). A key already watched keeps its first read.
    /// </summary>
    public void RecordWatch(int generation, IEnumerable<WatchedKey>? watched)
    {
        lock (_watchGate)
        {
            if (generation != WatchGeneration)
            {
                return;
            }

            if (watched is null)
            {
                WatchRefused = true;
                return;
            }

            Watches ??= [];
            foreach (var watch in watched)
            {
                if (Watches.TryAdd(watch.Key, watch))
                {
                    WatchedBytes += WatchedKeyCost(watch.Key);
                }
            }
        }
    }

    /// <summary>The commands queued since MULTI; null outside MULTI.</summary>
    public QueuedTransaction? Transaction { get; set; }

    public int SubscriptionCount => (Channels?.Count ?? 0) + (Patterns?.Count ?? 0);

    /// <summary>RESP2 connections with subscriptions accept only pub/sub commands, PING and QUIT, as in Redis.</summary>
    public bool InSubscriberContext => Protocol == RespProtocol.Resp2 && SubscriptionCount > 0;
}
