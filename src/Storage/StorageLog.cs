using Microsoft.Extensions.Logging;

namespace Dcache.Storage;

/// <summary>The storage layer's log messages (source-generated, no formatting unless enabled).</summary>
internal static partial class StorageLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information,
        Message = "Raft log opened from {Directory}: entries [{FirstIndex}, {LastIndex}], commit {Commit}, {RecordCount} records replayed, {TailRecords} past the recorded commit point")]
    public static partial void RaftLogOpened(ILogger logger, string directory, ulong firstIndex, ulong lastIndex, ulong commit, long recordCount, long tailRecords);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning,
        Message = "Dropped a torn tail of {Log} at address {Address}: {Reason}")]
    public static partial void TornTailDropped(ILogger logger, string log, long address, string reason);

    [LoggerMessage(EventId = 3, Level = LogLevel.Information,
        Message = "Raft log compacted to index {CompactIndex} (snapshot {SnapshotIndex}); head truncated to address {Address}")]
    public static partial void Compacted(ILogger logger, ulong compactIndex, ulong snapshotIndex, long address);

    [LoggerMessage(EventId = 4, Level = LogLevel.Information,
        Message = "Snapshot {Id} at index {Index} term {Term} stored: {SizeBytes} bytes in {ChunkCount} chunks")]
    public static partial void SnapshotStored(ILogger logger, long id, ulong index, ulong term, long sizeBytes, int chunkCount);

    [LoggerMessage(EventId = 5, Level = LogLevel.Information,
        Message = "Snapshot {Id} at index {Index} removed from the catalogue (keeping the newest {Keep})")]
    public static partial void SnapshotRemoved(ILogger logger, long id, ulong index, int keep);

    [LoggerMessage(EventId = 6, Level = LogLevel.Information,
        Message = "Snapshot log opened from {Directory}: {Count} snapshots in the catalogue")]
    public static partial void SnapshotLogOpened(ILogger logger, string directory, int count);
}
