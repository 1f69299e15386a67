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

    /// <summary>
    /// Present while `dcachectl snapshot restore` seeds the directory, removed once the restore is durable. A restore
    /// cut short (Ctrl-C, a lost session, power loss) leaves a directory with an identity but no log, which a node
    /// would take for a new one and found a new, empty cluster in; while this file exists, nothing opens it.
    /// </summary>
    public const string RestoreMarkerFileName = "RESTORING";

    private readonly FileStream _lock;
    private readonly string _directory;

    private NodeStorage(FileStream directoryLock, string directory, MetadataStore metadata, FasterRaftStorage raftLog, SnapshotStore snapshots)
    {
        _lock = directoryLock;
        _directory = directory;
        Metadata = metadata;
        RaftLog = raftLog;
        Snapshots = snapshots;
    }

    public MetadataStore Metadata { get; }

    public FasterRaftStorage RaftLog { get; }

    public SnapshotStore Snapshots { get; }

    /// <summary>Opens (or creates) a node's storage; refuses a directory that belongs to another node or cluster, or that a restore left unfinished.</summary>
    public static NodeStorage Open(StorageOptions options, ulong nodeId, string clusterId, ILoggerFactory? loggerFactory = null) =>
        Open(options, nodeId, clusterId, loggerFactory, restoring: false);

    /// <summary>
    /// Opens a new data directory to restore into: it is marked as a restore in progress until <see cref="FinishRestore"/>.
    /// A directory in use or not empty is refused (<see cref="RestoreRefusedException"/>) before anything is written.
    /// </summary>
    public static NodeStorage OpenForRestore(StorageOptions options, ulong nodeId, string clusterId) =>
        Open(options, nodeId, clusterId, loggerFactory: null, restoring: true);

    /// <summary>Ends a restore once the snapshot and the log that starts at it are durable: the directory is a node's from now on.</summary>
    public void FinishRestore()
    {
        File.Delete(Path.Combine(_directory, RestoreMarkerFileName));
        NativeFileSync.SyncDirectory(_directory);
    }

    /// <summary>
    /// Opens a stopped node's data directory under the identity it records (the offline recovery tools). The
    /// directory's lock is taken before anything in it is opened, so the files of a node still running are not touched.
    /// </summary>
    public static NodeStorage OpenExisting(StorageOptions options) =>
        Open(options, nodeId: null, clusterId: null, loggerFactory: null, restoring: false);

    private static NodeStorage Open(StorageOptions options, ulong? nodeId, string? clusterId, ILoggerFactory? loggerFactory, bool restoring)
    {
        loggerFactory ??= NullLoggerFactory.Instance;
        FileStream directoryLock;
        try
        {
            directoryLock = Lock(options.DataDirectory);
        }
        catch (InvalidOperationException ex) when (restoring)
        {
            throw new RestoreRefusedException(ex.Message, ex);
        }

        var directory = Path.GetFullPath(options.DataDirectory);
        MetadataStore? metadata = null;
        FasterRaftStorage? raftLog = null;
        try
        {
            var marker = Path.Combine(directory, RestoreMarkerFileName);
            if (restoring)
            {
                // Decided under the lock, so two restores cannot both find the directory free: the other one holds the
                // lock (refused above) or has left its files here (refused now).
                if (!IsEmptyForRestore(directory))
                {
                    throw new RestoreRefusedException($"{directory} is not empty; restore only seeds a new, empty data directory");
                }

                using (var file = new FileStream(marker, FileMode.CreateNew, FileAccess.Write))
                {
                    file.Flush(flushToDisk: true);
                }

                NativeFileSync.SyncDirectory(directory);
            }
            else if (File.Exists(marker))
            {
                throw new DataDirectoryRefusedException(
                    $"{directory} holds a snapshot restore that did not finish ({RestoreMarkerFileName} is there): delete the directory and restore again");
            }

            metadata = MetadataStore.Open(options.DataDirectory);
            if (nodeId is { } id && clusterId is not null)
            {
                metadata.EnsureIdentity(id, clusterId);
            }
            else if (metadata.NodeId is null || metadata.ClusterId is null)
            {
                throw new InvalidOperationException($"{directory} records no node id or cluster id");
            }

            raftLog = FasterRaftStorage.Open(options, metadata, loggerFactory.CreateLogger<FasterRaftStorage>());
            var snapshots = SnapshotStore.Open(options, metadata, loggerFactory.CreateLogger<SnapshotStore>());
            var log = raftLog;
            snapshots.LogBaseIndex = () => log.Snapshot.Index;
            return new NodeStorage(directoryLock, directory, metadata, raftLog, snapshots);
        }
        catch
        {
            raftLog?.Dispose();
            metadata?.Dispose();
            directoryLock.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Why a node could not keep its files under <see cref="StorageOptions.DataDirectory"/>, in the operating system's
    /// words, or null when it can: the data directory and each subdirectory the storage uses are created if missing, and
    /// a file is created, written, flushed and deleted in each. Checked before opening, so that a read-only disk or a
    /// path under a file is reported as such, not as whatever step of opening first tripped on it.
    /// </summary>
    public static string? WhyNotWritable(StorageOptions options) =>
        new[] { options.DataDirectory, options.RaftLogDirectory, options.SnapshotDirectory }
            .Select(NativeFileSync.WhyNotWritable)
            .FirstOrDefault(reason => reason is not null);

    /// <summary>Whether <paramref name="directory"/> is absent or holds nothing but a lock file: a restore may seed it.</summary>
    public static bool IsEmptyForRestore(string directory) =>
        !Directory.Exists(directory) || Directory.EnumerateFileSystemEntries(directory).All(entry => Path.GetFileName(entry) == LockFileName);

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
            throw new DataDirectoryRefusedException($"{Path.GetFullPath(directory)} is in use by another process (a running node?): stop it first ({ex.Message})", ex);
        }
    }
}
