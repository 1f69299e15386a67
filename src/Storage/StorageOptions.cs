namespace Dcache.Storage;

/// <summary>Sizes of one FasterLog: pages (an entry must fit in one), memory (pages buffered before they flush) and segment files.</summary>
public sealed class LogFileOptions
{
    /// <summary>Page size, as a power of two. The largest entry is a page minus a few dozen bytes of headers.</summary>
    public int PageSizeBits { get; set; } = 22;

    /// <summary>In-memory log buffer, as a power of two; at least two pages.</summary>
    public int MemorySizeBits { get; set; } = 23;

    /// <summary>Segment file size, as a power of two. Head truncation frees disk a whole segment at a time.</summary>
    public int SegmentSizeBits { get; set; } = 30;

    internal void Validate(string name)
    {
        if (PageSizeBits is < 9 or > 30 || MemorySizeBits < PageSizeBits + 1 || SegmentSizeBits < PageSizeBits || SegmentSizeBits > 40)
        {
            throw new ArgumentException(
                $"{name}: need 9 <= PageSizeBits <= 30, MemorySizeBits > PageSizeBits, PageSizeBits <= SegmentSizeBits <= 40 " +
                $"(got {PageSizeBits}/{MemorySizeBits}/{SegmentSizeBits})");
        }
    }
}

/// <summary>How the Raft driver waits for a log commit to become durable.</summary>
public enum CommitWaitMode
{
    /// <summary>Block on FasterLog's commit task: no CPU burnt while the disk works.</summary>
    Block,

    /// <summary>Spin (yielding) until the commit is durable: a little lower latency, one core busy meanwhile.</summary>
    Spin,
}

/// <summary>Configuration of a node's storage: the node sets its data directory; the rest are storage's own defaults, set by tests and benchmarks.</summary>
public sealed class StorageOptions
{
    /// <summary>The node's data directory: meta.db, raft-log/, snapshots/.</summary>
    public string DataDirectory { get; set; } = "data";

    public LogFileOptions RaftLog { get; set; } = new();

    /// <summary>Snapshot log: smaller pages (a chunk must fit in one), 64 MiB segments so old snapshots free disk soon.</summary>
    public LogFileOptions SnapshotLog { get; set; } = new() { PageSizeBits = 20, MemorySizeBits = 22, SegmentSizeBits = 26 };

    /// <summary>Payload bytes of recent entries kept in memory for replication and apply; older ones are read from the log.</summary>
    public long RecentEntryCacheBytes { get; set; } = 64L << 20;

    /// <summary>Largest chunk a snapshot is written in (bigger writes are split); must fit in a snapshot log page.</summary>
    public int SnapshotChunkBytes { get; set; } = 256 << 10;

    /// <summary>How many complete snapshots the catalogue keeps (the newest ones; and the one the Raft log starts from, see SnapshotStore.LogBaseIndex).</summary>
    public int SnapshotsToKeep { get; set; } = 2;

    public CommitWaitMode CommitWait { get; set; } = CommitWaitMode.Block;

    /// <summary>
    /// TEST ONLY (a slow disk for the chaos suite): the path of a file holding a number of milliseconds that every
    /// durable log commit then sleeps for after its write, re-read at most every 100 ms so a test can slow a running
    /// node's disk down and speed it up again. Empty (the default): off, and no file is ever looked at.
    /// </summary>
    public string TestOnlySlowDiskFile { get; set; } = "";

    /// <summary>Test hook: when false, commit hints that need no sync are not written (simulates losing them in a power cut).</summary>
    internal bool WriteCommitHints { get; set; } = true;

    internal string RaftLogDirectory => Path.Combine(DataDirectory, "raft-log");

    internal string SnapshotDirectory => Path.Combine(DataDirectory, "snapshots");

    internal void Validate()
    {
        RaftLog.Validate(nameof(RaftLog));
        SnapshotLog.Validate(nameof(SnapshotLog));
        if (SnapshotChunkBytes <= 0 || SnapshotChunkBytes > (1 << SnapshotLog.PageSizeBits) - 128)
        {
            throw new ArgumentException($"SnapshotChunkBytes must be positive and fit in a snapshot log page (got {SnapshotChunkBytes})");
        }

        if (SnapshotsToKeep < 1)
        {
            throw new ArgumentException("SnapshotsToKeep must be at least 1");
        }
    }
}
