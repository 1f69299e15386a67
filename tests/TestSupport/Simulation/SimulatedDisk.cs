using Dcache.Raft;

namespace Dcache.TestSupport.Simulation;

/// <summary>
/// The disks of a simulated cluster: per node, the Raft storage and the state-machine snapshot data kept beside it.
/// Whatever a call has returned from is durable: a simulated crash drops the node's process (and disposes its storage
/// handle), never what the disk holds. The in-memory implementation is <see cref="MemorySimulatedDisk"/>; a durable
/// implementation can be plugged in to run the same simulation against real storage.
/// </summary>
public interface ISimulatedDisk
{
    /// <summary>Creates a node's storage: bootstrapped with the initial membership, or empty for a node added later.</summary>
    IRaftStorage Create(ulong nodeId, Membership? bootstrap);

    /// <summary>Reopens a node's storage after a crash (its previous handle was disposed).</summary>
    IRaftStorage Open(ulong nodeId);

    /// <summary>Deletes everything a node stored (the node left the cluster for good).</summary>
    void Wipe(ulong nodeId);

    /// <summary>
    /// At a crash: drops a commit index the node saved without syncing (see <c>IRaftStorage.Save</c>), going back to
    /// <paramref name="syncedCommit"/>, the last one a sync made durable. Called only with
    /// <see cref="SimulationOptions.LoseUnsyncedCommits"/> on.
    /// </summary>
    void LoseUnsyncedCommit(ulong nodeId, ulong syncedCommit);

    /// <summary>Durably stores the serialized state machine covering entries up to <paramref name="index"/>.</summary>
    void SaveSnapshotData(ulong nodeId, ulong index, ReadOnlyMemory<byte> data);

    /// <summary>The snapshot data stored for <paramref name="index"/>, or null.</summary>
    ReadOnlyMemory<byte>? LoadSnapshotData(ulong nodeId, ulong index);

    /// <summary>Drops snapshot data for indexes below <paramref name="index"/> (superseded by a newer snapshot).</summary>
    void DiscardSnapshotDataBelow(ulong nodeId, ulong index);
}

/// <summary><see cref="ISimulatedDisk"/> in memory: a node's <see cref="MemoryStorage"/> object is its disk and survives crashes.</summary>
public sealed class MemorySimulatedDisk : ISimulatedDisk
{
    // Looked up by id only, never iterated, so the hash order cannot leak into the run.
    private readonly Dictionary<ulong, MemoryStorage> _storages = [];
    private readonly SnapshotDataStore _snapshots = new();

    public IRaftStorage Create(ulong nodeId, Membership? bootstrap)
    {
        if (_storages.ContainsKey(nodeId))
        {
            throw new InvalidOperationException($"node {nodeId} already has a disk");
        }

        var storage = bootstrap is null ? new MemoryStorage() : MemoryStorage.Bootstrap(bootstrap);
        _storages[nodeId] = storage;
        _snapshots.Create(nodeId);
        return storage;
    }

    public IRaftStorage Open(ulong nodeId) =>
        _storages.TryGetValue(nodeId, out var storage) ? storage : throw new InvalidOperationException($"node {nodeId} has no disk");

    public void Wipe(ulong nodeId)
    {
        _storages.Remove(nodeId);
        _snapshots.Remove(nodeId);
    }

    public void LoseUnsyncedCommit(ulong nodeId, ulong syncedCommit)
    {
        var storage = _storages[nodeId];
        storage.Save(storage.HardState with { Commit = syncedCommit }, [], null);
    }

    public void SaveSnapshotData(ulong nodeId, ulong index, ReadOnlyMemory<byte> data) => _snapshots.Save(nodeId, index, data);

    public ReadOnlyMemory<byte>? LoadSnapshotData(ulong nodeId, ulong index) => _snapshots.Load(nodeId, index);

    public void DiscardSnapshotDataBelow(ulong nodeId, ulong index) => _snapshots.DiscardBelow(nodeId, index);
}
