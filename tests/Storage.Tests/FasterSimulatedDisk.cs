using Dcache.Raft;
using Dcache.TestSupport.Simulation;

namespace Dcache.Storage.Tests;

/// <summary>
/// The simulator's disks on real storage: each node's Raft log is a <see cref="FasterRaftStorage"/> (FasterLog plus
/// its SQLite metadata) in its own directory under <see cref="RootDirectory"/>. A simulated crash is the simulator
/// disposing the handle and this disk reopening the directory, so a restart sees exactly what reached the files, which
/// the simulator compares with everything <see cref="IRaftStorage.Save"/> returned from. Wiping a node deletes its
/// directory; disposing the disk closes any handle still open and deletes the root, whether the run passed or not.
///
/// Snapshot data (the serialized state machine) stays in memory, as in <see cref="MemorySimulatedDisk"/>: the simulator
/// hands it over whole and never streams it, so the snapshot store has nothing to add here; the Raft log is what runs on
/// FASTER. Like the simulator, it is used from one thread.
/// </summary>
public sealed class FasterSimulatedDisk : ISimulatedDisk, IDisposable
{
    // Looked up by id only, never iterated in an order that could reach the run (Dispose closes them all, order-free).
    private readonly Dictionary<ulong, FasterRaftStorage> _handles = [];
    private readonly SnapshotDataStore _snapshots = new();
    private readonly LogFileOptions _raftLog;
    private readonly long _recentEntryCacheBytes;
    private bool _disposed;

    /// <param name="rootDirectory">Created here (it must not exist yet) and deleted on dispose.</param>
    /// <param name="raftLog">Page, memory and segment sizes of every node's log: small ones keep many nodes cheap.</param>
    /// <param name="recentEntryCacheBytes">
    /// Payload bytes of recent entries kept in memory: small, so that replication and apply also read older entries
    /// back from the segment files.
    /// </param>
    public FasterSimulatedDisk(string rootDirectory, LogFileOptions raftLog, long recentEntryCacheBytes)
    {
        if (Directory.Exists(rootDirectory))
        {
            throw new InvalidOperationException($"{rootDirectory} already exists: a simulated disk starts empty");
        }

        RootDirectory = Path.GetFullPath(rootDirectory);
        _raftLog = raftLog;
        _recentEntryCacheBytes = recentEntryCacheBytes;
        Directory.CreateDirectory(RootDirectory);
    }

    public string RootDirectory { get; }

    /// <summary>Times a node's storage was reopened from its directory (restarts after crashes).</summary>
    public int Reopens { get; private set; }

    public IRaftStorage Create(ulong nodeId, Membership? bootstrap)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var directory = NodeDirectory(nodeId);
        if (Directory.Exists(directory))
        {
            throw new InvalidOperationException($"node {nodeId} already has a disk");
        }

        var storage = OpenHandle(nodeId);
        if (bootstrap is not null)
        {
            storage.Bootstrap(bootstrap);
        }

        _snapshots.Create(nodeId);
        return storage;
    }

    public IRaftStorage Open(ulong nodeId)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_snapshots.Has(nodeId))
        {
            throw new InvalidOperationException($"node {nodeId} has no disk");
        }

        Reopens++;
        return OpenHandle(nodeId);
    }

    /// <summary>A handle closed at a crash writes out what it saved lazily, as a clean close does: nothing can be dropped.</summary>
    public void LoseUnsyncedCommit(ulong nodeId, ulong syncedCommit) =>
        throw new NotSupportedException("a FASTER log closed at a simulated crash keeps its lazily saved commit index: run with LoseUnsyncedCommits off");

    public void Wipe(ulong nodeId)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CloseHandle(nodeId);
        _snapshots.Remove(nodeId);
        var directory = NodeDirectory(nodeId);
        if (Directory.Exists(directory))
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    public void SaveSnapshotData(ulong nodeId, ulong index, ReadOnlyMemory<byte> data) => _snapshots.Save(nodeId, index, data);

    public ReadOnlyMemory<byte>? LoadSnapshotData(ulong nodeId, ulong index) => _snapshots.Load(nodeId, index);

    public void DiscardSnapshotDataBelow(ulong nodeId, ulong index) => _snapshots.DiscardBelow(nodeId, index);

    /// <summary>Closes the handles the simulator left open (nodes still running at the end) and deletes every node's files.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            foreach (var storage in _handles.Values)
            {
                storage.Dispose();
            }

            _handles.Clear();
        }
        finally
        {
            // Even if a handle failed to close: a run must not leave its files behind.
            if (Directory.Exists(RootDirectory))
            {
                Directory.Delete(RootDirectory, recursive: true);
            }
        }
    }

    private FasterRaftStorage OpenHandle(ulong nodeId)
    {
        // The simulator disposes a node's handle when it crashes it; closing it again here is a no-op then, and makes
        // sure two handles never share one directory if it did not (a dead process holds no files).
        CloseHandle(nodeId);
        var storage = FasterRaftStorage.Open(new StorageOptions
        {
            DataDirectory = NodeDirectory(nodeId),
            RaftLog = _raftLog,
            RecentEntryCacheBytes = _recentEntryCacheBytes,
        });
        _handles[nodeId] = storage;
        return storage;
    }

    private void CloseHandle(ulong nodeId)
    {
        if (_handles.Remove(nodeId, out var storage))
        {
            storage.Dispose();
        }
    }

    private string NodeDirectory(ulong nodeId) => Path.Combine(RootDirectory, $"n{nodeId}");

}
