using System.Buffers.Binary;
using Dcache.Raft;
using FASTER.core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Storage;

/// <summary>
/// Snapshots of the cache state, stored as chunks in a FasterLog of their own and catalogued in SQLite.
/// A snapshot is a Begin record (id, Raft index, term, membership), its data as Chunk records, and an End
/// record (size, CRC-32C of all the data, chunk count); records are chained and checksummed like the Raft log's.
/// Data streams in through a <see cref="SnapshotWriter"/> and out through a <see cref="SnapshotReader"/>, one
/// chunk at a time, so no snapshot is ever held whole in memory (InstallSnapshot, backups). A snapshot exists
/// once <see cref="SnapshotWriter.Complete"/> has made it durable and catalogued it; the newest
/// <see cref="StorageOptions.SnapshotsToKeep"/> are kept and the log's head is truncated below them.
/// Thread-safe: one writer at a time, any number of readers.
/// </summary>
public sealed class SnapshotStore : IDisposable
{
    private readonly StorageOptions _options;
    private readonly MetadataStore _metadata;
    private readonly ILogger _logger;
    private readonly LogGeometry _geometry;
    private readonly DurableLogCommitManager _commitManager;
    private readonly IDevice _device;
    private readonly FasterLog _log;
    private readonly Lock _gate = new();
    // Held shared by every use of the FasterLog (a writer's chunks among them, which run outside _gate) and exclusively
    // by Dispose: a snapshot being written while the node stops ends at its next use with ObjectDisposedException, and
    // the log is never disposed under a thread inside it (that thread would spin or wait on it for good). Taken
    // before _gate.
    private readonly ReaderWriterLockSlim _logInUse = new();
    private readonly SnapshotRecordWriter _recordWriter = new();
    private readonly Dictionary<long, int> _openReaders = [];
    private readonly Dictionary<long, long> _readerBegins = [];
    private long _nextId;
    private bool _writing;
    private bool _disposed;

    private SnapshotStore(StorageOptions options, MetadataStore metadata, ILogger logger)
    {
        options.Validate();
        _options = options;
        _metadata = metadata;
        _logger = logger;
        _geometry = GeometryFor(options);
        NativeFileSync.CreateDirectoryDurably(_geometry.Directory);

        // Every snapshot commit syncs its metadata: snapshots are rare and large, so the second sync is noise,
        // and the catalogue (written after the commit) can then rely on the recorded end exactly.
        _commitManager = new DurableLogCommitManager(_geometry, syncEveryCommit: true);
        try
        {
            var recovered = _commitManager.Recovered;
            var begin = recovered?.BeginAddress ?? LogGeometry.FirstValidAddress;
            var until = recovered?.UntilAddress ?? LogGeometry.FirstValidAddress;

            // Checked before anything is discarded: with its commit record lost or unreadable, the log would seem to end
            // at its start, and every snapshot's chunks would be deleted before the node refused to start.
            var catalogue = _metadata.ListSnapshots();
            foreach (var entry in catalogue.Where(e => e.BeginAddress < begin || e.EndAddress > until))
            {
                throw new StorageCorruptionException(_geometry.Describe(entry.BeginAddress), _geometry.FileOffsetOf(entry.BeginAddress),
                    $"catalogued snapshot {entry.Id} [{entry.BeginAddress}, {entry.EndAddress}) lies outside the snapshot log [{begin}, {until})");
            }

            LogScanner.DiscardAfter(_geometry, until); // an uncatalogued, unfinished snapshot's chunks
            _device = Devices.CreateLogDevice(_geometry.BasePath, recoverDevice: true);
            _log = new FasterLog(new FasterLogSettings
            {
                LogDevice = _device,
                PageSizeBits = options.SnapshotLog.PageSizeBits,
                MemorySizeBits = options.SnapshotLog.MemorySizeBits,
                SegmentSizeBits = options.SnapshotLog.SegmentSizeBits,
                LogCommitManager = _commitManager,
                TryRecoverLatest = true,
            });
            if (_log.TailAddress != until || _log.BeginAddress != begin)
            {
                throw new InvalidOperationException(
                    $"FasterLog recovered [{_log.BeginAddress}, {_log.TailAddress}) but the snapshot log holds [{begin}, {until}) in {_geometry.Directory}");
            }

            _nextId = catalogue.Count == 0 ? 1 : catalogue.Max(e => e.Id) + 1;
            StorageLog.SnapshotLogOpened(_logger, _geometry.Directory, catalogue.Count);
        }
        catch
        {
            _log?.Dispose();
            _device?.Dispose();
            _commitManager.Dispose();
            throw;
        }
    }

    public static SnapshotStore Open(StorageOptions options, MetadataStore metadata, ILogger<SnapshotStore>? logger = null) =>
        new(options, metadata, logger ?? NullLogger<SnapshotStore>.Instance);

    /// <summary>The catalogue, newest first.</summary>
    public IReadOnlyList<SnapshotCatalogueEntry> List()
    {
        lock (_gate)
        {
            return _metadata.ListSnapshots();
        }
    }

    public SnapshotCatalogueEntry? Latest => List() is [var newest, ..] ? newest : null;

    /// <summary>
    /// Starts a snapshot; only one may be written at a time. Dispose the writer without <see cref="SnapshotWriter.Complete"/>
    /// to abandon it. Once <paramref name="cancellationToken"/> is cancelled (the node stops), the writer's next chunk or
    /// its completion throws <see cref="OperationCanceledException"/> instead of writing: the snapshot is then abandoned.
    /// </summary>
    public SnapshotWriter BeginSnapshot(SnapshotMetadata metadata, CancellationToken cancellationToken = default)
    {
        using var _ = UseLog();
        lock (_gate)
        {
            if (_writing)
            {
                throw new SnapshotStoreBusyException("this node is writing another snapshot; try again shortly");
            }

            var id = _nextId++;
            long begin;
            try
            {
                begin = _log.Enqueue(_recordWriter.ForBegin(id, metadata));
            }
            catch (CommitFailureException ex)
            {
                throw WriteFailed(ex);
            }

            _writing = true;
            return new SnapshotWriter(this, id, metadata, begin, _options.SnapshotChunkBytes, cancellationToken);
        }
    }

    /// <summary>
    /// Opens a catalogued snapshot for reading; its chunks are not truncated away while the reader is open. A snapshot
    /// newer ones have replaced since <paramref name="entry"/> was listed is refused with
    /// <see cref="InvalidOperationException"/>: its chunks may be gone.
    /// </summary>
    public SnapshotReader OpenRead(SnapshotCatalogueEntry entry)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_metadata.ListSnapshots().Any(stored => stored.Id == entry.Id))
            {
                throw new InvalidOperationException($"snapshot {entry.Id} (index {entry.Metadata.Index}) is no longer stored: newer snapshots replaced it");
            }

            _openReaders[entry.Id] = _openReaders.GetValueOrDefault(entry.Id) + 1;
            _readerBegins[entry.Id] = entry.BeginAddress;
        }

        try
        {
            return new SnapshotReader(_geometry, entry, () => ReaderClosed(entry.Id));
        }
        catch
        {
            // A reader that never opened must not hold the log: its registration would keep every later snapshot's
            // space from being reclaimed until the node restarts.
            ReaderClosed(entry.Id);
            throw;
        }
    }

    public void Dispose()
    {
        _logInUse.EnterWriteLock();
        try
        {
            lock (_gate)
            {
                if (_disposed)
                {
                    return;
                }

                _disposed = true;
            }

            _log.Dispose();
            _device.Dispose();
            _commitManager.Dispose();
        }
        finally
        {
            _logInUse.ExitWriteLock();
        }
    }

    /// <summary>Holds the log open until the returned scope ends; throws once the store is disposed.</summary>
    private LogUse UseLog()
    {
        _logInUse.EnterReadLock();
        if (_disposed)
        {
            _logInUse.ExitReadLock();
            throw new ObjectDisposedException(nameof(SnapshotStore), "the snapshot store is closed (the node is stopping)");
        }

        return new LogUse(_logInUse);
    }

    private readonly struct LogUse(ReaderWriterLockSlim lockHeld) : IDisposable
    {
        public void Dispose() => lockHeld.ExitReadLock();
    }

    private void ThrowIfWriteFailed()
    {
        if (_commitManager.WriteFailure is { } failure)
        {
            throw new StorageWriteException($"the snapshot store in {_geometry.Directory} could not be written durably: {failure.Message}", failure);
        }
    }

    /// <summary>
    /// FasterLog's own device reports a failed write only as "failed with error code 4294967295", and callers would
    /// take its <see cref="CommitFailureException"/> for a passing problem: name it a durable-write failure, with what
    /// the file system has left (a full disk is the usual cause).
    /// </summary>
    private StorageWriteException WriteFailed(CommitFailureException failure)
    {
        string room;
        try
        {
            // FasterLog writes a page at a time: with less than a page free, that is why the write failed.
            var free = new DriveInfo(_geometry.Directory).AvailableFreeSpace;
            var page = 1L << _options.SnapshotLog.PageSizeBits;
            room = free < page ? $"No space left on device: {free} bytes free on its file system, less than a page ({page} bytes)" : $"{free} bytes free on its file system";
        }
        catch (IOException)
        {
            room = "free space unknown";
        }

        return new StorageWriteException($"the snapshot store in {_geometry.Directory} could not be written durably ({room}): {failure.Message}", failure);
    }

    internal static LogGeometry GeometryFor(StorageOptions options) =>
        new(Path.GetFullPath(options.SnapshotDirectory), "snap", options.SnapshotLog.PageSizeBits, options.SnapshotLog.SegmentSizeBits);

    /// <summary>Reads a whole snapshot, checking every chunk and the whole; returns its size. For verification.</summary>
    internal static long ReadAndCheck(LogGeometry geometry, SnapshotCatalogueEntry entry, Action<ReadOnlyMemory<byte>> onChunk)
    {
        using var reader = new SnapshotReader(geometry, entry, () => { });
        long size = 0;
        while (reader.TryReadChunk(out var chunk))
        {
            onChunk(chunk);
            size += chunk.Length;
        }

        return size;
    }

    internal void AppendChunk(ReadOnlyMemory<byte> data, long id, int sequence)
    {
        // FasterLog blocks here (yielding) while its memory is full of pages still being flushed: that is the
        // back-pressure that keeps a large snapshot from accumulating in memory. Once a flush failed, it throws.
        using var _ = UseLog();
        try
        {
            _log.Enqueue(_recordWriter.ForChunk(id, sequence, data));
        }
        catch (CommitFailureException ex)
        {
            throw WriteFailed(ex);
        }
    }

    internal SnapshotCatalogueEntry Complete(long id, SnapshotMetadata metadata, long begin, long size, uint crc, int chunks)
    {
        try
        {
            using var _ = UseLog();
            lock (_gate)
            {
                _log.Enqueue(_recordWriter.ForEnd(id, size, crc, chunks));
                FasterLogCommits.CommitAndWait(_log, ThrowIfWriteFailed);
                var entry = new SnapshotCatalogueEntry(id, metadata, begin, _log.TailAddress, size, crc, chunks, DateTimeOffset.UtcNow);
                _metadata.AddSnapshot(entry);
                StorageLog.SnapshotStored(_logger, id, metadata.Index, metadata.Term, size, chunks);
                Prune();
                return entry;
            }
        }
        catch (CommitFailureException ex)
        {
            throw WriteFailed(ex);
        }
        finally
        {
            // Also when it failed, or the store closed: an uncatalogued snapshot is abandoned, and the next may be begun.
            Abandon();
        }
    }

    internal void Abandon()
    {
        lock (_gate)
        {
            _writing = false;
        }
    }

    /// <summary>
    /// The index of the snapshot the Raft log starts from (its snapshot record), which a restart needs: kept beyond
    /// <see cref="StorageOptions.SnapshotsToKeep"/> while newer catalogued snapshots are not adopted by the log yet.
    /// Null: none (tests of the store alone).
    /// </summary>
    public Func<ulong>? LogBaseIndex { get; set; }

    /// <summary>
    /// Keeps the newest snapshots and the one the Raft log starts from, then frees the log below the oldest kept one
    /// (and below any open reader). Without the second, two newer snapshots catalogued before the log adopted either
    /// (received from leaders, one of them then deposed; a crash before the log's record was saved) removed the one
    /// the log still starts from, and the node could not start again.
    /// </summary>
    private void Prune()
    {
        var catalogue = _metadata.ListSnapshots();
        var logBase = LogBaseIndex?.Invoke();
        var logBaseKept = catalogue.Take(_options.SnapshotsToKeep).Any(entry => entry.Metadata.Index == logBase);
        foreach (var old in catalogue.Skip(_options.SnapshotsToKeep))
        {
            if (!logBaseKept && old.Metadata.Index == logBase)
            {
                logBaseKept = true;
                continue;
            }

            _metadata.RemoveSnapshot(old.Id);
            StorageLog.SnapshotRemoved(_logger, old.Id, old.Metadata.Index, _options.SnapshotsToKeep);
        }

        TruncateBelowNeeded();
    }

    private void TruncateBelowNeeded()
    {
        var catalogue = _metadata.ListSnapshots();
        if (catalogue.Count == 0)
        {
            return;
        }

        var keepFrom = catalogue.Min(e => e.BeginAddress);
        foreach (var readerBegin in _readerBegins.Values)
        {
            // A reader of a snapshot removed from the catalogue still needs its chunks: truncate only below it.
            // (The space is reclaimed at the next completed snapshot.)
            keepFrom = Math.Min(keepFrom, readerBegin);
        }

        if (keepFrom > _log.BeginAddress)
        {
            _log.TruncateUntil(keepFrom);
            FasterLogCommits.CommitAndWait(_log, ThrowIfWriteFailed);
        }
    }

    private void ReaderClosed(long id)
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            if (--_openReaders[id] == 0)
            {
                _openReaders.Remove(id);
                _readerBegins.Remove(id);
            }
        }
    }
}

/// <summary>Record kinds of the snapshot log.</summary>
internal enum SnapshotRecordKind : byte
{
    Begin = 1,
    Chunk = 2,
    End = 3,
}

/// <summary>
/// Serialises snapshot records into FasterLog's page. Bodies (after the frame): u64 snapshot id, then
/// Begin: u64 index, u64 term, membership; Chunk: u32 sequence, data; End: u64 size, u32 CRC-32C of the data, u32 chunk count.
/// Each snapshot's Begin record starts a new chain (previous CRC 0), so a snapshot can be read alone.
/// </summary>
internal sealed class SnapshotRecordWriter : ILogEnqueueEntry
{
    private SnapshotRecordKind _kind;
    private long _id;
    private SnapshotMetadata? _metadata;
    private int _sequence;
    private ReadOnlyMemory<byte> _data;
    private long _size;
    private uint _crc;
    private int _chunks;
    private uint _previousCrc;

    public int SerializedLength => RecordFrame.Size + BodyLength;

    private int BodyLength => 8 + _kind switch
    {
        SnapshotRecordKind.Begin => 16 + MembershipCodec.EncodedLength(_metadata!.Membership),
        SnapshotRecordKind.Chunk => 4 + _data.Length,
        _ => 16,
    };

    public SnapshotRecordWriter ForBegin(long id, SnapshotMetadata metadata)
    {
        (_kind, _id, _metadata, _previousCrc) = (SnapshotRecordKind.Begin, id, metadata, 0);
        return this;
    }

    public SnapshotRecordWriter ForChunk(long id, int sequence, ReadOnlyMemory<byte> data)
    {
        (_kind, _id, _sequence, _data) = (SnapshotRecordKind.Chunk, id, sequence, data);
        return this;
    }

    public SnapshotRecordWriter ForEnd(long id, long size, uint crc, int chunks)
    {
        (_kind, _id, _size, _crc, _chunks) = (SnapshotRecordKind.End, id, size, crc, chunks);
        return this;
    }

    public void SerializeTo(Span<byte> dest)
    {
        var bodyLength = BodyLength;
        RecordFrame.Write(dest, (byte)_kind, 0, _previousCrc, bodyLength);
        var body = dest[RecordFrame.Size..];
        BinaryPrimitives.WriteInt64LittleEndian(body, _id);
        switch (_kind)
        {
            case SnapshotRecordKind.Begin:
                BinaryPrimitives.WriteUInt64LittleEndian(body[8..], _metadata!.Index);
                BinaryPrimitives.WriteUInt64LittleEndian(body[16..], _metadata.Term);
                MembershipCodec.Write(_metadata.Membership, body[24..]);
                break;
            case SnapshotRecordKind.Chunk:
                BinaryPrimitives.WriteInt32LittleEndian(body[8..], _sequence);
                _data.Span.CopyTo(body[12..]);
                break;
            case SnapshotRecordKind.End:
                BinaryPrimitives.WriteInt64LittleEndian(body[8..], _size);
                BinaryPrimitives.WriteUInt32LittleEndian(body[16..], _crc);
                BinaryPrimitives.WriteInt32LittleEndian(body[20..], _chunks);
                break;
        }

        _previousCrc = RecordFrame.Seal(dest[..(RecordFrame.Size + bodyLength)]);
    }
}

/// <summary>
/// Feeds a snapshot into the store: <see cref="Write"/> as many times as needed (data is cut into chunks of at
/// most <see cref="StorageOptions.SnapshotChunkBytes"/>; at most one chunk is buffered), then
/// <see cref="Complete"/>. Disposing without completing abandons the snapshot (it is never catalogued); so does a
/// cancellation, seen before each chunk and before the End record. An abandoned snapshot's chunks are never committed
/// on their own: the next start discards them (<see cref="LogScanner.DiscardAfter"/>), as after a crash mid-snapshot,
/// and a later snapshot's commit in the same process leaves them uncatalogued below it, truncated with older snapshots.
/// </summary>
public sealed class SnapshotWriter : IDisposable
{
    private readonly SnapshotStore _store;
    private readonly long _id;
    private readonly SnapshotMetadata _metadata;
    private readonly long _begin;
    private readonly byte[] _chunk;
    private readonly CancellationToken _cancellation;
    private int _filled;
    private int _chunks;
    private long _size;
    private uint _crc;
    private bool _finished;

    internal SnapshotWriter(SnapshotStore store, long id, SnapshotMetadata metadata, long begin, int chunkBytes, CancellationToken cancellation)
    {
        (_store, _id, _metadata, _begin, _cancellation) = (store, id, metadata, begin, cancellation);
        _chunk = new byte[chunkBytes];
    }

    public SnapshotMetadata Metadata => _metadata;

    public void Write(ReadOnlySpan<byte> data)
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        while (data.Length > 0)
        {
            var take = Math.Min(data.Length, _chunk.Length - _filled);
            data[..take].CopyTo(_chunk.AsSpan(_filled));
            _filled += take;
            data = data[take..];
            if (_filled == _chunk.Length)
            {
                FlushChunk();
            }
        }
    }

    /// <summary>Makes the snapshot durable and catalogues it; returns its catalogue entry.</summary>
    public SnapshotCatalogueEntry Complete()
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        FlushChunk();
        _cancellation.ThrowIfCancellationRequested();
        _finished = true;
        return _store.Complete(_id, _metadata, _begin, _size, _crc, _chunks);
    }

    public void Dispose()
    {
        if (!_finished)
        {
            _finished = true;
            _store.Abandon();
        }
    }

    private void FlushChunk()
    {
        if (_filled == 0)
        {
            return;
        }

        _cancellation.ThrowIfCancellationRequested();
        var data = _chunk.AsMemory(0, _filled);
        _crc = Crc32C.Append(_crc, data.Span);
        _size += _filled;
        _store.AppendChunk(data, _id, _chunks++);
        _filled = 0;
    }
}

/// <summary>
/// Streams a catalogued snapshot back, chunk by chunk, checking each chunk's checksum as it is read and the
/// whole snapshot's size and CRC-32C at its end (a mismatch throws <see cref="StorageCorruptionException"/>).
/// A chunk handed out is valid until the next read.
/// </summary>
public sealed class SnapshotReader : IDisposable
{
    private readonly LogGeometry _geometry;
    private readonly LogCursor _cursor;
    private readonly Action _onDispose;
    private long _size;
    private uint _crc;
    private int _chunks;
    private bool _ended;
    private bool _disposed;

    internal SnapshotReader(LogGeometry geometry, SnapshotCatalogueEntry entry, Action onDispose)
    {
        _geometry = geometry;
        Entry = entry;
        _onDispose = onDispose;
        _cursor = new LogCursor(geometry, entry.BeginAddress, entry.EndAddress, entry.EndAddress);
        try
        {
            if (!_cursor.MoveNext() || (SnapshotRecordKind)RecordFrame.Kind(_cursor.Record.Span) != SnapshotRecordKind.Begin || Id(_cursor.Record.Span) != entry.Id)
            {
                throw LogScanner.Corrupt(geometry, entry.BeginAddress, $"snapshot {entry.Id} does not start with its Begin record");
            }
        }
        catch
        {
            _cursor.Dispose();
            throw;
        }
    }

    public SnapshotCatalogueEntry Entry { get; }

    public bool TryReadChunk(out ReadOnlyMemory<byte> chunk)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        chunk = default;
        if (_ended)
        {
            return false;
        }

        if (!_cursor.MoveNext())
        {
            throw LogScanner.Corrupt(_geometry, Entry.EndAddress, $"snapshot {Entry.Id} ends without its End record");
        }

        var record = _cursor.Record.Span;
        var body = RecordFrame.Body(record);
        if (Id(record) != Entry.Id)
        {
            throw LogScanner.Corrupt(_geometry, _cursor.Address, $"record of snapshot {Id(record)} inside snapshot {Entry.Id}");
        }

        switch ((SnapshotRecordKind)RecordFrame.Kind(record))
        {
            case SnapshotRecordKind.Chunk when BinaryPrimitives.ReadInt32LittleEndian(body[8..]) == _chunks:
                chunk = _cursor.Record[(RecordFrame.Size + 12)..];
                _crc = Crc32C.Append(_crc, chunk.Span);
                _size += chunk.Length;
                _chunks++;
                return true;
            case SnapshotRecordKind.End:
                var (size, crc, chunks) = (BinaryPrimitives.ReadInt64LittleEndian(body[8..]), BinaryPrimitives.ReadUInt32LittleEndian(body[16..]), BinaryPrimitives.ReadInt32LittleEndian(body[20..]));
                if (size != _size || crc != _crc || chunks != _chunks || size != Entry.SizeBytes || crc != Entry.Crc32C)
                {
                    throw LogScanner.Corrupt(_geometry, _cursor.Address,
                        $"snapshot {Entry.Id} read back as {_size} bytes in {_chunks} chunks with CRC {_crc:x8}, but was written as {size} bytes in {chunks} chunks with CRC {crc:x8}");
                }

                _ended = true;
                return false;
            default:
                throw LogScanner.Corrupt(_geometry, _cursor.Address, $"unexpected record in snapshot {Entry.Id} after chunk {_chunks}");
        }
    }

    /// <summary>The chunks in order (each valid until the next is requested).</summary>
    public IEnumerable<ReadOnlyMemory<byte>> Chunks()
    {
        while (TryReadChunk(out var chunk))
        {
            yield return chunk;
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _cursor.Dispose();
        _onDispose();
    }

    private static long Id(ReadOnlySpan<byte> record) => BinaryPrimitives.ReadInt64LittleEndian(RecordFrame.Body(record));
}
