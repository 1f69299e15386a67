using Dcache.Raft;

namespace Dcache.Node.Consensus;

/// <summary>What the Raft driver needs from snapshot storage: save local snapshots, read them back, receive them from a leader.</summary>
public interface INodeSnapshotStore
{
    /// <summary>
    /// Durably stores a snapshot whose data <paramref name="write"/> streams; returns once it is durable. Thread-safe; one
    /// snapshot is written at a time. Once <paramref name="cancellationToken"/> is cancelled (the node stops) it throws
    /// <see cref="OperationCanceledException"/> within a chunk or so, and keeps nothing of the snapshot.
    /// </summary>
    void Save(SnapshotMetadata metadata, Action<Stream> write, CancellationToken cancellationToken);

    /// <summary>The stored snapshot at exactly <paramref name="index"/>, or null.</summary>
    StoredSnapshot? Find(ulong index);

    /// <summary>Every stored snapshot, newest first.</summary>
    IReadOnlyList<StoredSnapshot> All();

    /// <summary>A writer for snapshot data arriving from a leader. Throws <see cref="InvalidOperationException"/> while another snapshot is being written.</summary>
    IReceivedSnapshotWriter BeginReceive(SnapshotMetadata metadata);
}

/// <summary>A stored snapshot: its metadata, a checksum of its data, and a way to read the data in chunks.</summary>
public sealed record StoredSnapshot(SnapshotMetadata Metadata, ulong Checksum, long Length, Func<Stream> OpenRead);

/// <summary>Snapshot data being received; nothing is kept unless <see cref="Commit"/> succeeds.</summary>
public interface IReceivedSnapshotWriter : IDisposable
{
    void Write(ReadOnlySpan<byte> chunk);

    /// <summary>Checks the data against <paramref name="checksum"/> (CRC-32C) and stores it durably; throws <see cref="InvalidDataException"/> when it does not match.</summary>
    void Commit(ulong checksum);
}
