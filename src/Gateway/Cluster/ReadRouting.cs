namespace Dcache.Gateway.Cluster;

/// <summary>Where the gateway sends reads (linearizable and READONLY alike); writes always go to the leader.</summary>
public enum ReadRouting
{
    /// <summary>
    /// Round the healthy members: a follower serves a linearizable read after asking the leader for its read index,
    /// so read work is spread when each node has its own machine.
    /// </summary>
    Members,

    /// <summary>
    /// To the leader while one is known (round the members otherwise): no read-index request travels between nodes
    /// and the followers stay idle, which is cheaper when the nodes share a machine's CPUs.
    /// </summary>
    Leader,
}
