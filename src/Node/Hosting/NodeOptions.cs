using System.Globalization;
using Dcache.Protocol;
using Dcache.Storage;

namespace Dcache.Node.Hosting;

/// <summary>Configuration of one cache node (section "Dcache:Node" of appsettings.json, environment DCACHE__NODE__*, or --Dcache:Node:Key=value).</summary>
public sealed class NodeOptions
{
    public const string Section = "Dcache:Node";

    /// <summary>This node's id, unique in the cluster, never 0.</summary>
    public ulong NodeId { get; set; }

    /// <summary>Identifies the cluster: nodes refuse traffic that names another cluster.</summary>
    public string ClusterId { get; set; } = "dcache";

    /// <summary>Shared by every node and gateway of the cluster; calls without it are refused.</summary>
    public string ClusterSecret { get; set; } = "";

    /// <summary>Where this node keeps its log, snapshots and metadata.</summary>
    public string DataDirectory { get; set; } = "data";

    /// <summary>The h2c (HTTP/2 without TLS) endpoint for gRPC, e.g. http://127.0.0.1:7001.</summary>
    public string GrpcUrl { get; set; } = "http://127.0.0.1:7001";

    /// <summary>The HTTP/1.1 endpoint for /health and /metrics, e.g. http://127.0.0.1:8001.</summary>
    public string HttpUrl { get; set; } = "http://127.0.0.1:8001";

    /// <summary>
    /// The founding members and their gRPC addresses, "1=http://127.0.0.1:7001,2=http://127.0.0.1:7002,...".
    /// Used to bootstrap a brand-new data directory and to find peers; a node joining an existing cluster lists the
    /// members it can reach and sets <see cref="Join"/>.
    /// </summary>
    public string InitialCluster { get; set; } = "";

    /// <summary>Start with an empty membership and wait to be added by the leader (a new learner), instead of bootstrapping.</summary>
    public bool Join { get; set; }

    /// <summary>Length of one Raft tick.</summary>
    public int TickMilliseconds { get; set; } = 50;

    /// <summary>Election timeout in ticks (randomized between this and twice this).</summary>
    public int ElectionTicks { get; set; } = 10;

    /// <summary>Heartbeat interval in ticks.</summary>
    public int HeartbeatTicks { get; set; } = 2;

    /// <summary>Take a snapshot once this many entries were applied since the last one.</summary>
    public ulong SnapshotEntries { get; set; } = 100_000;

    /// <summary>Entries kept in the log behind a snapshot, so that slightly lagging followers catch up without one.</summary>
    public ulong SnapshotCatchUpEntries { get; set; } = 5_000;

    /// <summary>Memory cap for keys and values in bytes (0 = none). Past it, the least recently written keys are evicted, identically on every replica.</summary>
    public long MaxMemoryBytes { get; set; }

    /// <summary>How often the leader proposes purging expired keys.</summary>
    public int ExpiryPurgeMilliseconds { get; set; } = 1000;

    /// <summary>A client session is forgotten after this long without writes.</summary>
    public int SessionTimeoutSeconds { get; set; } = 3600;

    /// <summary>
    /// The settings every replica's cache must share, as the nodes compare them (ClusterCredentials.CacheSettingsHeader):
    /// the memory cap decides which keys eviction removes, the session timeout which retried writes apply.
    /// </summary>
    public string CacheSettings => string.Create(CultureInfo.InvariantCulture, $"max-memory-bytes={MaxMemoryBytes};session-timeout-seconds={SessionTimeoutSeconds}");

    /// <summary>How long a write or linearizable read may wait inside the node before it fails.</summary>
    public int RequestTimeoutMilliseconds { get; set; } = 5000;

    /// <summary>
    /// Seconds without any HTTP/2 frame from a client connection of the gRPC port (a gateway's, a peer node's,
    /// dcachectl's) after which this node sends it a keepalive ping; 0 turns the node's pings off. Dcache's own clients
    /// ping a silent connection every 5 s, so at the default a live one is never pinged: only a peer that vanished
    /// without closing its connection (powered off, dropped by a NAT or load balancer) is.
    /// </summary>
    public int KeepAlivePingDelaySeconds { get; set; } = 10;

    /// <summary>
    /// Seconds a pinged connection has to send any frame before this node closes it, ending every call on it: a
    /// vanished gateway's command streams end and their replies are dropped, a vanished peer's Raft stream ends. So a
    /// peer that vanished is noticed within <see cref="KeepAlivePingDelaySeconds"/> plus this plus up to 4 s (Kestrel adds a
    /// second of caution to each and checks its connections once a second).
    /// </summary>
    public int KeepAlivePingTimeoutSeconds { get; set; } = 20;

    /// <summary>
    /// Largest gRPC message accepted and sent, in bytes. It also bounds a write's log entry (this less 64 KiB of header
    /// room): a larger one is refused, since no follower could receive it. Gateways must use the same value.
    /// </summary>
    public int MaxMessageBytes { get; set; } = MessageLimits.DefaultMaxMessageBytes;

    /// <summary>
    /// TEST ONLY, BREAKS LINEARIZABILITY: serve linearizable reads from this node's local state without ReadIndex,
    /// so a follower behind the leader, or a deposed leader cut off from the cluster, answers with stale data. It
    /// exists so the chaos suite (tests/Chaos) can prove that it detects stale reads. Never set it in production.
    /// </summary>
    public bool TestOnlyUnsafeReads { get; set; }

    /// <summary>
    /// TEST ONLY (a slow disk): a file holding a delay in milliseconds that every durable log commit sleeps for,
    /// re-read at most every 100 ms. Empty (the default) turns it off. See StorageOptions.TestOnlySlowDiskFile.
    /// </summary>
    public string TestOnlySlowDiskFile { get; set; } = "";

    /// <summary>
    /// TEST ONLY: the log entry format this node tells its peers it reads, instead of its build's newest (0, the
    /// default). Set to 1, it stands for a node of an older build during a rolling upgrade.
    /// </summary>
    public int TestOnlyAdvertisedEntryFormat { get; set; }

    /// <summary>The log entry format this node says it reads: its build's newest, or <see cref="TestOnlyAdvertisedEntryFormat"/>.</summary>
    public byte AdvertisedEntryFormat => TestOnlyAdvertisedEntryFormat > 0 ? (byte)TestOnlyAdvertisedEntryFormat : Cache.CacheCommand.FormatVersion;

    /// <summary>
    /// TEST ONLY (a wrong clock): added to this node's wall-clock time, e.g. "01:30:00" or "-00:10:00"; zero (the
    /// default) turns it off. A leader stamps its proposals with that time, so a node set ahead moves the cache's clock
    /// forward for good once it leads (sessions and expiry times are judged by it). Timers and durations are not
    /// affected. The chaos suite's clock jump (tests/Chaos) uses it. At most <see cref="MaxTestOnlyClockOffset"/> either way.
    /// </summary>
    public TimeSpan TestOnlyClockOffset { get; set; }

    /// <summary>Bound of <see cref="TestOnlyClockOffset"/>: a day covers any skew a test needs and keeps dates sane.</summary>
    public static readonly TimeSpan MaxTestOnlyClockOffset = TimeSpan.FromDays(1);

    /// <summary>A learner is promoted to voter only when its log is within this many entries of the leader's (and it holds at least one entry).</summary>
    public ulong PromoteMaxLagEntries { get; set; } = 1000;

    /// <summary>The shortest election timeout (ElectionTicks ticks).</summary>
    public TimeSpan ElectionTimeout => TimeSpan.FromMilliseconds((double)TickMilliseconds * ElectionTicks);

    public IReadOnlyDictionary<ulong, string> ParseInitialCluster() => ParseMembers(InitialCluster);

    public static IReadOnlyDictionary<ulong, string> ParseMembers(string text, bool requirePort = false) => Protocol.ClusterMembers.Parse(text, requirePort);

    /// <summary>
    /// Bound of <see cref="ElectionTimeout"/>: a leader that died is replaced only after it, and gateways give up on a
    /// command after 4 s by default, so a minute already means a long outage for every write.
    /// </summary>
    public static readonly TimeSpan MaxElectionTimeout = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Throws <see cref="InvalidOperationException"/> naming <see cref="DataDirectory"/>, its full path and the
    /// operating system's reason when the node could not keep its files there (a read-only disk, a path under a file,
    /// no permission). Creates the directory if missing; run after <see cref="Validate"/>, which touches no disk.
    /// </summary>
    public void CheckDataDirectoryWritable()
    {
        if (NodeStorage.WhyNotWritable(new StorageOptions { DataDirectory = DataDirectory }) is { } reason)
        {
            throw new InvalidOperationException($"{Section}:DataDirectory '{Path.GetFullPath(DataDirectory)}' cannot be written: {reason}");
        }
    }

    /// <summary>Throws <see cref="InvalidOperationException"/> naming the first setting that is out of range.</summary>
    public void Validate()
    {
        if (NodeId == 0)
        {
            throw new InvalidOperationException($"{Section}:NodeId must be set to a positive number");
        }

        ConfigurationChecks.HeaderValue(ClusterId, $"{Section}:ClusterId");
        ConfigurationChecks.HeaderValue(ClusterSecret, $"{Section}:ClusterSecret");

        if (string.IsNullOrWhiteSpace(DataDirectory))
        {
            throw new InvalidOperationException($"{Section}:DataDirectory must be set");
        }

        if (DataDirectory.Contains('\0', StringComparison.Ordinal))
        {
            // No path holds one; the data directory check would fail on it with an exception rather than a line.
            throw new InvalidOperationException($"{Section}:DataDirectory must not contain a NUL character");
        }

        if (File.Exists(DataDirectory))
        {
            throw new InvalidOperationException($"{Section}:DataDirectory '{DataDirectory}' is a file, not a directory");
        }

        var grpc = ConfigurationChecks.ListenEndpoint(GrpcUrl, $"{Section}:GrpcUrl");
        var http = ConfigurationChecks.ListenEndpoint(HttpUrl, $"{Section}:HttpUrl");
        if (grpc.Port == http.Port)
        {
            throw new InvalidOperationException($"{Section}:GrpcUrl and {Section}:HttpUrl must use different ports, not both {grpc.Port}");
        }

        IReadOnlyDictionary<ulong, string> members;
        try
        {
            members = ParseInitialCluster();
        }
        catch (FormatException ex)
        {
            throw new InvalidOperationException($"{Section}:InitialCluster: {ex.Message}", ex);
        }

        if (Raft.Membership.CheckSize(members.Count, members.Values) is { } tooLarge)
        {
            throw new InvalidOperationException($"{Section}:InitialCluster: {tooLarge}");
        }

        if (!Join && members.Count == 0)
        {
            throw new InvalidOperationException($"{Section}:InitialCluster must be set: the founding members, 1=http://host:port,2=... (or set Join to join a running cluster)");
        }

        if (!Join && !members.ContainsKey(NodeId))
        {
            throw new InvalidOperationException($"{Section}:InitialCluster must list this node ({NodeId}) unless Join is set");
        }

        if (TestOnlyAdvertisedEntryFormat != 0 && TestOnlyAdvertisedEntryFormat is < Cache.CacheCommand.OldestFormatVersion or > Cache.CacheCommand.FormatVersion)
        {
            throw new InvalidOperationException($"{Section}:TestOnlyAdvertisedEntryFormat must be 0 or between {Cache.CacheCommand.OldestFormatVersion} and {Cache.CacheCommand.FormatVersion}");
        }

        if (TestOnlyClockOffset.Duration() > MaxTestOnlyClockOffset)
        {
            throw new InvalidOperationException($"{Section}:TestOnlyClockOffset must be between -{MaxTestOnlyClockOffset} and {MaxTestOnlyClockOffset}, not {TestOnlyClockOffset}");
        }

        // Kestrel takes nothing under a second for either (it would flood or abort live connections); a delay of 0 is off.
        ConfigurationChecks.AtLeast(KeepAlivePingDelaySeconds, 0, $"{Section}:KeepAlivePingDelaySeconds");
        ConfigurationChecks.AtLeast(KeepAlivePingTimeoutSeconds, 1, $"{Section}:KeepAlivePingTimeoutSeconds");

        ConfigurationChecks.AtLeast(TickMilliseconds, 1, $"{Section}:TickMilliseconds");
        ConfigurationChecks.AtLeast(HeartbeatTicks, 1, $"{Section}:HeartbeatTicks");
        if (ElectionTicks <= HeartbeatTicks)
        {
            throw new InvalidOperationException($"{Section}:ElectionTicks must be greater than HeartbeatTicks ({HeartbeatTicks}), not {ElectionTicks}");
        }

        if (ElectionTimeout > MaxElectionTimeout)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                $"{Section}:ElectionTicks times TickMilliseconds (the election timeout) must be at most {MaxElectionTimeout.TotalMilliseconds} ms, not {ElectionTicks} x {TickMilliseconds} ms"));
        }

        // Zero or less: every write and linearizable read would time out at once.
        ConfigurationChecks.AtLeast(RequestTimeoutMilliseconds, 1, $"{Section}:RequestTimeoutMilliseconds");
        // Zero or less: the leader would propose a purge at every tick.
        ConfigurationChecks.AtLeast(ExpiryPurgeMilliseconds, 1, $"{Section}:ExpiryPurgeMilliseconds");
        ConfigurationChecks.AtLeast(SessionTimeoutSeconds, 1, $"{Section}:SessionTimeoutSeconds");
        ConfigurationChecks.AtLeast(MaxMemoryBytes, 0, $"{Section}:MaxMemoryBytes");
        ConfigurationChecks.InRange(MaxMessageBytes, MessageLimits.MinMaxMessageBytes, MessageLimits.MaxMaxMessageBytes, $"{Section}:MaxMessageBytes");
        if (SnapshotEntries == 0)
        {
            // Zero: a snapshot after every applied entry, one after the other.
            throw new InvalidOperationException($"{Section}:SnapshotEntries must be at least 1");
        }
    }
}
