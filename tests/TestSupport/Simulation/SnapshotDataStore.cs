namespace Dcache.TestSupport.Simulation;

/// <summary>Snapshot data per simulated node, kept in memory beside whatever holds its Raft log.</summary>
public sealed class SnapshotDataStore
{
    private readonly Dictionary<ulong, SortedDictionary<ulong, ReadOnlyMemory<byte>>> _byNode = [];

    public bool Has(ulong nodeId) => _byNode.ContainsKey(nodeId);

    public void Create(ulong nodeId) => _byNode[nodeId] = [];

    public void Remove(ulong nodeId) => _byNode.Remove(nodeId);

    public void Save(ulong nodeId, ulong index, ReadOnlyMemory<byte> data) => Of(nodeId)[index] = data.ToArray();

    // The cast matters: a bare `null` would convert to an empty ReadOnlyMemory through the implicit array conversion.
    public ReadOnlyMemory<byte>? Load(ulong nodeId, ulong index) =>
        Of(nodeId).TryGetValue(index, out var data) ? data : (ReadOnlyMemory<byte>?)null;

    public void DiscardBelow(ulong nodeId, ulong index)
    {
        var snapshots = Of(nodeId);
        while (snapshots.Count > 0 && snapshots.First().Key < index)
        {
            snapshots.Remove(snapshots.First().Key);
        }
    }

    private SortedDictionary<ulong, ReadOnlyMemory<byte>> Of(ulong nodeId) =>
        _byNode.TryGetValue(nodeId, out var snapshots) ? snapshots : throw new InvalidOperationException($"node {nodeId} has no disk");
}
