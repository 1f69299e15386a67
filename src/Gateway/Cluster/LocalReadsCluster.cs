using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Cluster;

/// <summary>Serves every read locally, whatever the connection asked for (GatewayOptions.LocalReads).</summary>
public sealed class LocalReadsCluster(ICacheCluster inner) : ICacheCluster
{
    public ClusterView View => inner.View;

    public Task<Reply> ExecuteAsync(Command command, ReadMode mode, CancellationToken cancellationToken) =>
        inner.ExecuteAsync(command, ReadMode.Local, cancellationToken);

    public void ExecuteAll(IReadOnlyList<ClusterCall> calls, CancellationToken cancellationToken)
    {
        var local = new ClusterCall[calls.Count];
        for (var i = 0; i < local.Length; i++)
        {
            local[i] = new ClusterCall(calls[i].Command, ReadMode.Local);
            calls[i].CompleteWith(local[i].Reply);
        }

        inner.ExecuteAll(local, cancellationToken);
    }
}
