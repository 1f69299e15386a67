using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Storage;

/// <summary>
/// Everything a node keeps on disk, opened together from <see cref="StorageOptions.DataDirectory"/>:
/// the metadata store (meta.db), the Raft log and the snapshot store. Disposing closes all three.
/// </summary>
public sealed class NodeStorage : IDisposable
{
    private NodeStorage(MetadataStore metadata, FasterRaftStorage raftLog, SnapshotStore snapshots)
    {
        Metadata = metadata;
        RaftLog = raftLog;
        Snapshots = snapshots;
    }

    public MetadataStore Metadata { get; }

    public FasterRaftStorage RaftLog { get; }

    public SnapshotStore Snapshots { get; }

    /// <summary>Opens (or creates) a node's storage; refuses a directory that belongs to another node or cluster.</summary>
    public static NodeStorage Open(StorageOptions options, ulong nodeId, string clusterId, ILoggerFactory? loggerFactory = null)
    {
        loggerFactory ??= NullLoggerFactory.Instance;
        var metadata = MetadataStore.Open(options.DataDirectory);
        FasterRaftStorage? raftLog = null;
        try
        {
            metadata.EnsureIdentity(nodeId, clusterId);
            raftLog = FasterRaftStorage.Open(options, metadata, loggerFactory.CreateLogger<FasterRaftStorage>());
            var snapshots = SnapshotStore.Open(options, metadata, loggerFactory.CreateLogger<SnapshotStore>());
            return new NodeStorage(metadata, raftLog, snapshots);
        }
        catch
        {
            raftLog?.Dispose();
            metadata.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        Snapshots.Dispose();
        RaftLog.Dispose();
        Metadata.Dispose();
    }
}
