using System.Globalization;
using Dcache.Protocol;

namespace Dcache.Gateway.Cluster;

/// <summary>How the gateway reaches the cluster (section "Dcache:Gateway:Cluster").</summary>
public sealed class ClusterOptions
{
    public const string SectionName = "Cluster";

    public const string Section = $"{Hosting.GatewayOptions.Section}:{SectionName}";

    /// <summary>The nodes' gRPC addresses, "http://127.0.0.1:7001,http://127.0.0.1:7002,...".</summary>
    public string Nodes { get; set; } = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003";

    public string ClusterId { get; set; } = "dcache";

    public string ClusterSecret { get; set; } = "";

    /// <summary>
    /// Which nodes serve reads. <see cref="ReadRouting.Members"/> (the default) spreads them over the healthy members;
    /// <see cref="ReadRouting.Leader"/> sends them to the leader while one is known, which costs the cluster about
    /// half the CPU per read when its nodes share one machine's cores (docs/benchmarks.md).
    /// </summary>
    public ReadRouting ReadRouting { get; set; } = ReadRouting.Members;

    /// <summary>Long-lived command streams per node; concurrent commands are multiplexed and batched over them.</summary>
    public int StreamsPerNode { get; set; } = 2;

    /// <summary>Most commands sent in one batch message.</summary>
    public int MaxBatch { get; set; } = 512;

    /// <summary>
    /// The nodes' Dcache:Node:MaxMessageBytes: batch messages are cut to fit it, and a command too large to fit alone
    /// is refused here rather than sent (a node would refuse the message and break the stream it came on).
    /// </summary>
    public int MaxMessageBytes { get; set; } = Dcache.Protocol.MessageLimits.DefaultMaxMessageBytes;

    /// <summary>
    /// Most commands one node may hold at once: queued for its streams or sent and not yet answered. An attempt that
    /// would go past it is not sent (it is retried, reads at another member): a stalled node takes in commands only until
    /// then, however long load goes on, rather than one per command sent to it until its stream breaks. Far above what a
    /// node that answers holds (a few thousand under 200 pipelining clients).
    /// </summary>
    public int MaxCommandsPerNode { get; set; } = 65_536;

    /// <summary>One attempt at one node may take this long.</summary>
    public int AttemptTimeoutMilliseconds { get; set; } = 1500;

    /// <summary>
    /// All attempts of one command together may take this long. A leader election fits well inside, and it stays below
    /// the 5 s that Redis clients wait by default, so a client hears the gateway's documented error rather than timing out.
    /// </summary>
    public int DeadlineMilliseconds { get; set; } = 4000;

    /// <summary>How often every node is asked who leads.</summary>
    public int StatusPollMilliseconds { get; set; } = 1000;

    /// <summary>
    /// How long a node the leader's membership no longer lists (removed, or a member's old address after a move) stays
    /// known: then its connection is closed and it is no longer polled, unless it is one of <see cref="Nodes"/>. Long
    /// enough that a node removed and added back at the same address, or a membership briefly out of date, keeps its
    /// connection; a node listed again after it was let go is connected to anew.
    /// </summary>
    public int RemovedNodeGraceMilliseconds { get; set; } = 300_000;

    /// <summary>
    /// A node whose attempts failed this often (a lost stream, or no answer within <see cref="AttemptTimeoutMilliseconds"/>),
    /// at least half of its attempts in the last max(2 s, (this + 1) attempt timeouts), is skipped for
    /// <see cref="BreakMilliseconds"/>.
    /// </summary>
    public int BreakAfterFailures { get; set; } = 5;

    /// <summary>How long a node's open breaker skips it; then one attempt probes it, and an answer lets it back in.</summary>
    public int BreakMilliseconds { get; set; } = 1000;

    public IReadOnlyList<string> NodeAddresses()
    {
        var addresses = new List<string>();
        var authorities = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var address in Nodes.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Uri.TryCreate(address, UriKind.Absolute, out var uri) || uri.Scheme != Uri.UriSchemeHttp || uri.Port == 0)
            {
                throw new FormatException($"'{address}' is not an http:// node address with a port 1-65535");
            }

            // One address is one node: listed twice, it would be polled twice and get twice its share of the reads.
            if (!authorities.Add(uri.GetLeftPart(UriPartial.Authority)))
            {
                throw new FormatException($"'{address}' is listed twice");
            }

            addresses.Add(address.TrimEnd('/'));
        }

        return addresses;
    }

    /// <summary>
    /// Throws <see cref="InvalidOperationException"/> naming the first setting that is out of range. The timeout and
    /// breaker ranges are the ones Polly accepts; outside them the first command would fail instead of the start.
    /// </summary>
    public void Validate()
    {
        IReadOnlyList<string> nodes;
        try
        {
            nodes = NodeAddresses();
        }
        catch (FormatException ex)
        {
            throw new InvalidOperationException($"{Section}:Nodes: {ex.Message}", ex);
        }

        if (nodes.Count == 0)
        {
            throw new InvalidOperationException($"{Section}:Nodes lists no node");
        }

        ConfigurationChecks.HeaderValue(ClusterId, $"{Section}:ClusterId");
        ConfigurationChecks.HeaderValue(ClusterSecret, $"{Section}:ClusterSecret");
        ConfigurationChecks.AtLeast(StreamsPerNode, 1, $"{Section}:StreamsPerNode");
        ConfigurationChecks.AtLeast(MaxBatch, 1, $"{Section}:MaxBatch");
        ConfigurationChecks.InRange(MaxMessageBytes, MessageLimits.MinMaxMessageBytes, MessageLimits.MaxMaxMessageBytes, $"{Section}:MaxMessageBytes");
        ConfigurationChecks.AtLeast(MaxCommandsPerNode, 1, $"{Section}:MaxCommandsPerNode");
        ConfigurationChecks.InRange(AttemptTimeoutMilliseconds, 10, MaxTimeoutMilliseconds, $"{Section}:AttemptTimeoutMilliseconds");
        ConfigurationChecks.InRange(DeadlineMilliseconds, 10, MaxTimeoutMilliseconds, $"{Section}:DeadlineMilliseconds");
        // Zero or less: the poll that finds the leader would never run, and no write would reach one.
        ConfigurationChecks.AtLeast(StatusPollMilliseconds, 1, $"{Section}:StatusPollMilliseconds");
        ConfigurationChecks.AtLeast(RemovedNodeGraceMilliseconds, 0, $"{Section}:RemovedNodeGraceMilliseconds");
        ConfigurationChecks.AtLeast(BreakAfterFailures, 2, $"{Section}:BreakAfterFailures");
        if (BreakerSamplingMilliseconds > MaxTimeoutMilliseconds)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                $"({Section}:BreakAfterFailures + 1) x {Section}:AttemptTimeoutMilliseconds (how far back the breaker looks) must be at most {MaxTimeoutMilliseconds} ms, not ({BreakAfterFailures} + 1) x {AttemptTimeoutMilliseconds} ms"));
        }

        ConfigurationChecks.InRange(BreakMilliseconds, 500, MaxTimeoutMilliseconds, $"{Section}:BreakMilliseconds");
    }

    /// <summary>
    /// How far back a node's breaker looks: at least 2 s, and long enough to hold <see cref="BreakAfterFailures"/>
    /// attempt timeouts in a row, which is how a stalled node looks to a lone client sending one command at a time (with
    /// 2 s, the 1.5 s attempt timeout let no more than two in, and the breaker never opened).
    /// </summary>
    internal long BreakerSamplingMilliseconds => Math.Max(2000L, (BreakAfterFailures + 1L) * AttemptTimeoutMilliseconds);

    private const long MaxTimeoutMilliseconds = 24L * 60 * 60 * 1000;
}
