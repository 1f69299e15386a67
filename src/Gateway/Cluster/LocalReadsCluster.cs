using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Cluster;

/// <summary>
/// Serves every read locally, whatever the connection asked for (GatewayOptions.LocalReads). WATCH's read is the
/// exception: it reads through the log, as on a READONLY connection, so that EXEC compares against every write
/// acknowledged before the WATCH, not against a replica that may lag.
/// </summary>
public sealed class LocalReadsCluster(ICacheCluster inner) : ICacheCluster
{
    public ClusterView View => inner.View;

    public Task<Reply> ExecuteAsync(Command command, ReadMode mode, CancellationToken cancellationToken) =>
        inner.ExecuteAsync(command, ModeFor(command, mode), cancellationToken);

    public void ExecuteAll(IReadOnlyList<ClusterCall> calls, CancellationToken cancellationToken)
    {
        var local = new ClusterCall[calls.Count];
        for (var i = 0; i < local.Length; i++)
        {
            local[i] = new ClusterCall(calls[i].Command, ModeFor(calls[i].Command, calls[i].Mode)) { DeadlineStartedAt = calls[i].DeadlineStartedAt };
            calls[i].CompleteWith(local[i].Reply);
        }

        inner.ExecuteAll(local, cancellationToken);
    }

    private static ReadMode ModeFor(Command command, ReadMode asked) =>
        command.OpCase == Command.OpOneofCase.Watch ? asked : ReadMode.Local;
}
