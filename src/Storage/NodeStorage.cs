using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Storage;

/// <summary>
/// Everything a node keeps on disk, opened together from <see cref="StorageOptions.DataDirectory"/>:
/// the metadata store (meta.db), the Raft log and the snapshot store. Disposing closes all three.
/// While open, an exclusive lock on <see cref="LockFileName"/> keeps any other process (a second node started on the
/// same directory, or dcachectl's offline tools while the node runs) from opening it too.
/// </summary>
public sealed class NodeStorage : IDisposable
{
    public const string LockFileName = "LOCK";

    private readonly FileStream _lock;

    private NodeStorage(FileStream directoryLock, MetadataStore metadata, FasterRaftStorage raftLog, SnapshotStore snapshots)
    {
        _lock = directoryLock;
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
        var directoryLock = Lock(options.DataDirectory);
        MetadataStore? metadata = null;
        FasterRaftStorage? raftLog = null;
        try
        {
            metadata = MetadataStore.Open(options.DataDirectory);
            metadata.EnsureIdentity(nodeId, clusterId);
            raftLog = FasterRaftStorage.Open(options, metadata, loggerFactory.CreateLogger<FasterRaftStorage>());
            var snapshots = SnapshotStore.Open(options, metadata, loggerFactory.CreateLogger<SnapshotStore>());
            return new NodeStorage(directoryLock, metadata, raftLog, snapshots);
        }
        catch
        {
            raftLog?.Dispose();
            metadata?.Dispose();
            directoryLock.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        Snapshots.Dispose();
        RaftLog.Dispose();
        Metadata.Dispose();
        _lock.Dispose();
    }

    /// <summary>FileShare.None takes an exclusive advisory lock (flock) on Linux; the kernel drops it when the process dies.</summary>
    private static FileStream Lock(string directory)
    {
        NativeFileSync.CreateDirectoryDurably(directory);
        var path = Path.Combine(Path.GetFullPath(directory), LockFileName);
        try
        {
            return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException ex)
        {
            throw new InvalidOperationException($"{Path.GetFullPath(directory)} is in use by another process (a running node?): stop it first ({ex.Message})", ex);
        }
    }
}
