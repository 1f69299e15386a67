using System.Buffers.Binary;
using FASTER.core;
using Microsoft.Win32.SafeHandles;

namespace Dcache.Storage;

/// <summary>What the commit metadata file held when the log was opened.</summary>
internal sealed record RecoveredCommit(long BeginAddress, long UntilAddress, long CommitNum, ReplayBase ReplayBase);

/// <summary>
/// FasterLog's commit bookkeeping, replaced. Why: FASTER's default manager writes a new commit file per commit
/// (opened O_SYNC), unlinks the previous one and never fsyncs the directory. That is two synchronous writes, a
/// create and an unlink per commit (about 800 commits/s here, a fifth of the disk's fdatasync rate) and, without
/// the directory fsync, the newest commit file may not survive a power cut at all.
///
/// This manager keeps the commit metadata in one preallocated file with two checksummed slots. Every write goes to
/// the slot that does not hold the newest synced one, so a torn write (or a lost one) always leaves the newest synced
/// state intact; alternating blindly let two unsynced writes overwrite it, and a power cut tearing the second then
/// left only an older slot, whose begin address named segments already deleted. On an ordinary commit it writes the slot
/// without syncing it: the slot is then a hint of where the durable log ends, and the truth is the log itself,
/// whose data FasterLog wrote with O_SYNC before calling <see cref="Commit"/>. Recovery (<see cref="LogScanner"/>)
/// reads intact, chained records past the hint, so a commit costs one synchronous data write. The slot is synced
/// when losing it would lose something the log cannot tell: a new begin address (segments below it are deleted
/// right after this call) or a new <see cref="ReplayBase"/>. The directory is fsynced when the log grows into a
/// new segment file, before that commit is acknowledged, and after segment files were deleted.
/// </summary>
internal sealed class DurableLogCommitManager : ILogCommitManager
{
    private const uint Magic = 0x4D4C4344; // "DCLM"
    private const ushort SlotFormatVersion = 1;
    private const int SlotSize = 4096;
    private const int SlotHeaderSize = 24;

    private readonly LogGeometry _geometry;
    private readonly bool _syncEveryCommit;
    private readonly bool _writeHints;
    private readonly SafeFileHandle _file;
    private readonly string _path;
    private readonly Lock _gate = new();
    private readonly byte[] _slotBuffer = new byte[SlotSize];
    private long _sequence;
    // The slot holding the newest synced write (-1 before the first): writes go to the other one.
    private int _durableSlot = -1;
    private byte[] _fasterMetadata = [];
    private byte[] _replayBase = [];
    private byte[] _durableReplayBase = [];
    private long _durableBeginAddress = LogGeometry.FirstValidAddress; // what recovery assumes without a slot
    private int _highestSyncedSegment = -1;
    private bool _directorySyncPending;
    private byte[]? _recoveryMetadata;

    /// <param name="syncEveryCommit">Sync the slot on every commit (for logs whose recovery does not scan past the hint).</param>
    /// <param name="writeHints">
    /// Write the slot on commits that need no sync. Tests turn this off to reproduce, with SIGKILL, what a power cut
    /// does (unsynced hint writes lost), so that recovery past the hint is exercised on every crash.
    /// </param>
    public DurableLogCommitManager(LogGeometry geometry, bool syncEveryCommit, bool writeHints = true)
    {
        _geometry = geometry;
        _syncEveryCommit = syncEveryCommit;
        _writeHints = writeHints;
        _path = MetadataPath(geometry);
        var created = !File.Exists(_path);
        _file = File.OpenHandle(_path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        if (created)
        {
            // Preallocate both slots so that later slot writes never change the file size (fdatasync then has no
            // inode update to flush), and make the file's existence durable.
            RandomAccess.SetLength(_file, 2 * SlotSize);
            NativeFileSync.DataSync(_file);
            NativeFileSync.SyncDirectory(geometry.Directory);
        }

        (Recovered, _sequence, _fasterMetadata, var newestSlot) = ReadNewestSlot(_file);
        if (Recovered is not null)
        {
            // What was read may have been an unsynced write still in the page cache (the process died, the machine
            // did not): synced now, it is the newest durable state, which later writes must not overwrite.
            NativeFileSync.DataSync(_file);
            _durableSlot = newestSlot;
            _replayBase = _durableReplayBase = Recovered.ReplayBase.Encode();
            _durableBeginAddress = Recovered.BeginAddress;
        }
    }

    /// <summary>The newest intact slot at open, or null for a new (or never committed) log.</summary>
    public RecoveredCommit? Recovered { get; }

    public string FilePath => _path;

    // Not named "{BaseName}.*": FASTER's device treats every file starting with its base name as a segment.
    public static string MetadataPath(LogGeometry geometry) => Path.Combine(geometry.Directory, $"commit-{geometry.BaseName}.dat");

    /// <summary>
    /// Tells FasterLog, when it recovers, that the log is committed from <paramref name="beginAddress"/> up to
    /// <paramref name="untilAddress"/>: the end the scan found, which may lie past the recorded hint.
    /// </summary>
    public void SetRecoveryPoint(long beginAddress, long untilAddress, long commitNum)
    {
        var info = new FasterLogRecoveryInfo();
        info.Initialize();
        info.BeginAddress = beginAddress;
        info.UntilAddress = untilAddress;
        info.CommitNum = Math.Max(commitNum, 1);
        _recoveryMetadata = info.ToByteArray();
        _highestSyncedSegment = Math.Max(_highestSyncedSegment, _geometry.SegmentOf(Math.Max(untilAddress - 1, 0)));
    }

    /// <summary>Sets the replay base the next commit will persist (and sync, since it changed).</summary>
    public void SetReplayBase(ReplayBase replayBase)
    {
        lock (_gate)
        {
            _replayBase = replayBase.Encode();
        }
    }

    /// <summary>Persists a new replay base now, durably, without a FasterLog commit.</summary>
    public void PersistReplayBase(ReplayBase replayBase)
    {
        lock (_gate)
        {
            _replayBase = replayBase.Encode();
            WriteSlot(sync: true, _durableBeginAddress);
        }
    }

    /// <summary>
    /// The first commit whose metadata could not be written (or whose directory could not be synced), or null. FasterLog
    /// runs commits on a task of its own and drops their exceptions, so a caller waiting for a commit reads the cause here.
    /// </summary>
    public IOException? WriteFailure => Volatile.Read(ref _writeFailure);

    private IOException? _writeFailure;

    public void Commit(long beginAddress, long untilAddress, byte[] commitMetadata, long commitNum, bool forceWriteMetadata)
    {
        try
        {
            CommitMetadata(beginAddress, untilAddress, commitMetadata, forceWriteMetadata);
        }
        catch (IOException ex)
        {
            Interlocked.CompareExchange(ref _writeFailure, ex, null);
            throw;
        }
    }

    private void CommitMetadata(long beginAddress, long untilAddress, byte[] commitMetadata, bool forceWriteMetadata)
    {
        lock (_gate)
        {
            var lastSegment = _geometry.SegmentOf(Math.Max(untilAddress - 1, 0));
            if (lastSegment > _highestSyncedSegment || _directorySyncPending)
            {
                // The log grew into a new segment file (or old ones were deleted): make the directory entry durable
                // before this commit is acknowledged, or a power cut could lose the whole file.
                NativeFileSync.SyncDirectory(_geometry.Directory);
                _highestSyncedSegment = Math.Max(_highestSyncedSegment, lastSegment);
                _directorySyncPending = false;
            }

            _fasterMetadata = commitMetadata;
            var beginMoved = beginAddress != _durableBeginAddress;
            var sync = _syncEveryCommit || forceWriteMetadata || beginMoved || !_replayBase.AsSpan().SequenceEqual(_durableReplayBase);
            if (sync || _writeHints)
            {
                WriteSlot(sync, beginAddress);
            }

            if (beginMoved)
            {
                // FasterLog deletes the segments below the new begin address right after this call returns.
                _directorySyncPending = true;
            }
        }
    }

    public byte[] GetCommitMetadata(long commitNum)
    {
        lock (_gate)
        {
            return _recoveryMetadata ?? _fasterMetadata;
        }
    }

    public IEnumerable<long> ListCommits()
    {
        lock (_gate)
        {
            if (_recoveryMetadata is not null)
            {
                return [1];
            }

            return _fasterMetadata.Length > 0 ? [1] : [];
        }
    }

    public void RemoveCommit(long commitNum)
    {
    }

    public void RemoveAllCommits()
    {
    }

    public void OnRecovery(long commitNum)
    {
        lock (_gate)
        {
            _recoveryMetadata = null;
        }
    }

    public void Dispose() => _file.Dispose();

    private void WriteSlot(bool sync, long beginAddress)
    {
        var payloadLength = 8 + _fasterMetadata.Length + _replayBase.Length;
        if (SlotHeaderSize + payloadLength > SlotSize)
        {
            throw new InvalidOperationException($"commit metadata of {payloadLength} bytes does not fit a {SlotSize}-byte slot");
        }

        _sequence++;
        var slot = _slotBuffer.AsSpan();
        slot.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(slot, Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(slot[4..], SlotFormatVersion);
        BinaryPrimitives.WriteInt64LittleEndian(slot[8..], _sequence);
        BinaryPrimitives.WriteInt32LittleEndian(slot[16..], payloadLength);
        var payload = slot.Slice(SlotHeaderSize, payloadLength);
        BinaryPrimitives.WriteInt32LittleEndian(payload, _fasterMetadata.Length);
        _fasterMetadata.CopyTo(payload[4..]);
        BinaryPrimitives.WriteInt32LittleEndian(payload[(4 + _fasterMetadata.Length)..], _replayBase.Length);
        _replayBase.CopyTo(payload[(8 + _fasterMetadata.Length)..]);
        BinaryPrimitives.WriteUInt32LittleEndian(slot[20..], SlotCrc(slot, payloadLength));

        var slotIndex = _durableSlot == 0 ? 1 : 0;
        RandomAccess.Write(_file, _slotBuffer, slotIndex * SlotSize);
        if (sync)
        {
            NativeFileSync.DataSync(_file);
            _durableSlot = slotIndex;
            _durableReplayBase = _replayBase;
            _durableBeginAddress = beginAddress;
        }
    }

    private static uint SlotCrc(ReadOnlySpan<byte> slot, int payloadLength) =>
        Crc32C.Append(Crc32C.Compute(slot[..20]), slot.Slice(SlotHeaderSize, payloadLength));

    /// <summary>Reads the commit metadata of a log without opening it for writing (for verification).</summary>
    public static RecoveredCommit? ReadRecovered(LogGeometry geometry)
    {
        var path = MetadataPath(geometry);
        if (!File.Exists(path))
        {
            return null;
        }

        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return ReadNewestSlot(file).Recovered;
    }

    private static (RecoveredCommit? Recovered, long Sequence, byte[] FasterMetadata, int Slot) ReadNewestSlot(SafeFileHandle file)
    {
        RecoveredCommit? newest = null;
        long newestSequence = 0;
        var newestSlot = -1;
        byte[] newestMetadata = [];
        var buffer = new byte[SlotSize];
        for (var i = 0; i < 2; i++)
        {
            var read = RandomAccess.Read(file, buffer, i * SlotSize);
            if (read < SlotHeaderSize || BinaryPrimitives.ReadUInt32LittleEndian(buffer) != Magic)
            {
                continue;
            }

            var sequence = BinaryPrimitives.ReadInt64LittleEndian(buffer.AsSpan(8));
            var payloadLength = BinaryPrimitives.ReadInt32LittleEndian(buffer.AsSpan(16));
            if (payloadLength < 8 || SlotHeaderSize + payloadLength > SlotSize
                || BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(20)) != SlotCrc(buffer, payloadLength))
            {
                continue; // torn or corrupt: the other slot holds the previous commit
            }

            if (newest is not null && sequence <= newestSequence)
            {
                continue;
            }

            var payload = buffer.AsSpan(SlotHeaderSize, payloadLength);
            var fasterLength = BinaryPrimitives.ReadInt32LittleEndian(payload);
            var faster = payload.Slice(4, fasterLength).ToArray();
            var baseLength = BinaryPrimitives.ReadInt32LittleEndian(payload[(4 + fasterLength)..]);
            var replayBase = ReplayBase.Decode(payload.Slice(8 + fasterLength, baseLength));
            long begin = LogGeometry.FirstValidAddress, until = LogGeometry.FirstValidAddress, commitNum = 0;
            if (faster.Length > 0)
            {
                var info = new FasterLogRecoveryInfo();
                using var reader = new BinaryReader(new MemoryStream(faster));
                info.Initialize(reader);
                (begin, until, commitNum) = (info.BeginAddress, info.UntilAddress, info.CommitNum);
            }

            newestSequence = sequence;
            newestSlot = i;
            newestMetadata = faster;
            newest = new RecoveredCommit(begin, until, commitNum, replayBase);
        }

        return (newest, newestSequence, newestMetadata, newestSlot);
    }
}
