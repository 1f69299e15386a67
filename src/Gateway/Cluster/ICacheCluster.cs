using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Cluster;

/// <summary>How a read is served.</summary>
public enum ReadMode
{
    /// <summary>Linearizable (ReadIndex), spread over all nodes.</summary>
    Linearizable,
    /// <summary>A replica's local state, possibly stale (the connection sent READONLY).</summary>
    Local,
}

/// <summary>
/// The gateway's view of the cluster: run one command and get its reply. Implementations route writes to the leader,
/// spread reads, batch concurrent commands over a few streams, and retry what is safe to retry. A write must carry its
/// session (client id, sequence) so that a retry applies once. The returned reply is either the command's result or a
/// Failure whose kind says whether the command may have applied (OUTCOME_UNKNOWN) or certainly did not.
/// </summary>
public interface ICacheCluster
{
    Task<Reply> ExecuteAsync(Command command, ReadMode mode, CancellationToken cancellationToken);

    /// <summary>What INFO reports about the cluster: known leader, node count, and so on.</summary>
    ClusterView View { get; }
}

public sealed record ClusterView(ulong LeaderId, string? LeaderAddress, int Nodes, int HealthyNodes);
