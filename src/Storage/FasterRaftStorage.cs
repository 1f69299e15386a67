using Dcache.Raft;
using FASTER.core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Storage;

/// <summary>
/// The Raft log on FasterLog: <see cref="IRaftStorage"/> for a node's Raft driver.
///
/// Write path: each <see cref="Save"/> enqueues its records (snapshot marker, entries, commit index) into
/// FasterLog's in-memory pages and makes them durable with one commit, that is one O_SYNC write of the new
/// bytes (see <see cref="DurableLogCommitManager"/> for why the commit metadata costs no second sync). The
/// driver batches every pending proposal into one Ready, so one Save carries many entries: group commit.
///
/// Hard state placement: the term and vote go to SQLite (<see cref="MetadataStore"/>), synchronously, and only
/// when they change, which happens on elections, rarely. The commit index, which a leader advances on nearly every
/// Ready, is a small record in the same log commit as the entries, so a Ready costs one fsync, not two. Term and
/// vote are written before the log records of the same Save, as Raft updates its term before appending.
///
/// Supersede rule: an entry with index i supersedes every entry with index &gt;= i written before it; replay applies
/// the records in order through the same <see cref="RaftLogState"/> operations as the live path.
///
/// Reads: recent payloads are kept in memory (<see cref="StorageOptions.RecentEntryCacheBytes"/>); older entries
/// are read from the segment files by address and their checksums verified.
///
/// Threading: like <see cref="MemoryStorage"/>, one thread (the Raft driver) calls it at a time.
/// </summary>
public sealed class FasterRaftStorage : IRaftStorage
{

    private readonly StorageOptions _options;
    private readonly MetadataStore _metadata;
    private readonly bool _ownsMetadata;
    private readonly ILogger _logger;
    private readonly LogGeometry _geometry;
    private readonly DurableLogCommitManager _commitManager;
    private readonly SynchronousFileDevice _device;
    private readonly FasterLog _log;
    private readonly RaftLogState _state;
    private readonly RaftRecordWriter _writer = new();
    private readonly SegmentFileCache _readers;
    private readonly List<long> _entryAddresses = [];
    private readonly long _maxRecordLength;

    /// <summary>
    /// The largest entry payload this log stores: a record must fit in one page. A leader must refuse larger commands
    /// before proposing them: an entry that does not fit stops every node that tries to save it.
    /// </summary>
    public int MaxEntryDataBytes { get; }
    private readonly TestOnlySlowDisk _slowDisk;
    private ulong _term;
    private ulong _vote;
    private bool _disposed;

    private FasterRaftStorage(StorageOptions options, MetadataStore metadata, bool ownsMetadata, ILogger logger)
    {
        options.Validate();
        _options = options;
        _slowDisk = new TestOnlySlowDisk(options.TestOnlySlowDiskFile);
        _metadata = metadata;
        _ownsMetadata = ownsMetadata;
        _logger = logger;
        _geometry = new LogGeometry(Path.GetFullPath(options.RaftLogDirectory), "log", options.RaftLog.PageSizeBits, options.RaftLog.SegmentSizeBits);
        _maxRecordLength = _geometry.PageSize - LogGeometry.EntryHeaderSize - 64;
        MaxEntryDataBytes = (int)Math.Min(int.MaxValue, _maxRecordLength - RaftRecordWriter.EntryRecordLength(0));
        NativeFileSync.CreateDirectoryDurably(_geometry.Directory);

        _commitManager = new DurableLogCommitManager(_geometry, syncEveryCommit: false, options.WriteCommitHints);
        try
        {
            var recovered = _commitManager.Recovered;
            if (recovered is null)
            {
                var segments = LogScanner.ExistingSegments(_geometry).ToList();
                if (segments.Count > 0 && !segments.Contains(0))
                {
                    throw new StorageCorruptionException(_commitManager.FilePath, 0,
                        "no intact commit metadata slot, and the log's first segment is gone (the head was truncated): cannot tell where the log begins");
                }
            }

            var begin = recovered?.BeginAddress ?? LogGeometry.FirstValidAddress;
            var until = recovered?.UntilAddress ?? LogGeometry.FirstValidAddress;
            _state = new RaftLogState(recovered?.ReplayBase ?? ReplayBase.Empty, options.RecentEntryCacheBytes);
            var scan = LogScanner.Scan(_geometry, begin, until, new ReplayVisitor(_state, _geometry));
            if (scan.StopReason is not null)
            {
                StorageLog.TornTailDropped(_logger, _geometry.BasePath, scan.EndAddress, scan.StopReason);
            }

            LogScanner.DiscardAfter(_geometry, scan.EndAddress);
            if (scan.EndAddress != until)
            {
                _commitManager.SetRecoveryPoint(begin, scan.EndAddress, recovered?.CommitNum ?? 1);
            }

            _device = new SynchronousFileDevice(_geometry);
            _log = new FasterLog(new FasterLogSettings
            {
                LogDevice = _device,
                PageSizeBits = options.RaftLog.PageSizeBits,
                MemorySizeBits = options.RaftLog.MemorySizeBits,
                SegmentSizeBits = options.RaftLog.SegmentSizeBits,
                LogCommitManager = _commitManager,
                TryRecoverLatest = true,
            });

            // FasterLog swallows recovery failures and starts empty; never run on a log it did not recover.
            if (_log.TailAddress != scan.EndAddress || _log.BeginAddress != begin)
            {
                throw new InvalidOperationException(
                    $"FasterLog recovered [{_log.BeginAddress}, {_log.TailAddress}) but the log holds [{begin}, {scan.EndAddress}) in {_geometry.Directory}");
            }

            _writer.PreviousCrc = scan.LastCrc;
            _readers = new SegmentFileCache(_geometry);
            (_term, _vote) = _metadata.LoadTermAndVote();
            StorageLog.RaftLogOpened(_logger, _geometry.Directory, FirstIndex, LastIndex, _state.Commit, scan.RecordCount, scan.TailRecordCount);
        }
        catch
        {
            _log?.Dispose();
            _device?.Dispose();
            _commitManager.Dispose();
            throw;
        }
    }

    /// <summary>Opens (or creates) the Raft log in <see cref="StorageOptions.DataDirectory"/>, with its own metadata store.</summary>
    public static FasterRaftStorage Open(StorageOptions options, ILogger<FasterRaftStorage>? logger = null)
    {
        var metadata = MetadataStore.Open(options.DataDirectory);
        try
        {
            return new FasterRaftStorage(options, metadata, ownsMetadata: true, logger ?? NullLogger<FasterRaftStorage>.Instance);
        }
        catch
        {
            metadata.Dispose();
            throw;
        }
    }

    /// <summary>Opens the Raft log sharing the node's metadata store (which the caller keeps owning).</summary>
    public static FasterRaftStorage Open(StorageOptions options, MetadataStore metadata, ILogger<FasterRaftStorage>? logger = null) =>
        new(options, metadata, ownsMetadata: false, logger ?? NullLogger<FasterRaftStorage>.Instance);

    public ulong FirstIndex => _state.FirstIndex;

    public ulong LastIndex => _state.LastIndex;

    public SnapshotMetadata Snapshot => _state.Snapshot;

    public HardState HardState => new(_term, _vote, _state.Commit);

    /// <summary>Where the log's files are, for tools and tests.</summary>
    public string LogDirectory => _geometry.Directory;

    internal long TailAddress => _log.TailAddress;

    /// <summary>The log address of entry <paramref name="index"/> (for fault-injection tests).</summary>
    internal long AddressOf(ulong index) => _state.SlotAt(index).Address;

    internal LogGeometry Geometry => _geometry;

    internal long BeginAddress => _log.BeginAddress;

    public RaftInitialState InitialState() => new(HardState, _state.Snapshot);

    /// <summary>On a founding member: writes the committed membership changes of <see cref="ClusterBootstrap.InitialLog"/> (like MemoryStorage.Bootstrap).</summary>
    public void Bootstrap(Membership membership)
    {
        ThrowIfDisposed();
        if (_state.LastIndex != 0 || !_state.Snapshot.IsEmpty || _state.Snapshot.Membership.Voters.Count > 0)
        {
            throw new InvalidOperationException("bootstrap needs an empty log");
        }

        var (hardState, entries) = ClusterBootstrap.InitialLog(membership);
        Save(hardState, entries, null);
        _metadata.SaveMembership(hardState.Commit, membership);
    }

    public LogReadStatus TryGetTerm(ulong index, out ulong term) => _state.TryGetTerm(index, out term);

    public LogReadStatus TryGetEntries(ulong lo, ulong hi, ulong maxBytes, List<Entry> into)
    {
        ThrowIfDisposed();
        if (lo <= _state.CompactIndex)
        {
            return LogReadStatus.Compacted;
        }

        if (hi > _state.LastIndex + 1)
        {
            return LogReadStatus.Unavailable;
        }

        ulong size = 0;
        for (var index = lo; index < hi; index++)
        {
            var entry = ReadEntry(index);
            size += entry.Size;
            if (size > maxBytes && index > lo)
            {
                break;
            }

            into.Add(entry);
        }

        return LogReadStatus.Ok;
    }

    public void Save(HardState? hardState, IReadOnlyList<Entry> entries, SnapshotMetadata? snapshot)
    {
        ThrowIfDisposed();
        if (hardState is { } termAndVote && (termAndVote.Term != _term || termAndVote.Vote != _vote))
        {
            _metadata.SaveTermAndVote(termAndVote.Term, termAndVote.Vote);
            (_term, _vote) = (termAndVote.Term, termAndVote.Vote);
        }

        var installSnapshot = snapshot is not null && snapshot.Index > _state.Snapshot.Index;
        if (entries.Count > 0)
        {
            var (compactIndex, lastIndex) = installSnapshot ? _state.PreviewSnapshot(snapshot!) : (_state.CompactIndex, _state.LastIndex);
            _state.CheckAppend(entries[0].Index, compactIndex, lastIndex);
            for (var i = 0; i < entries.Count; i++)
            {
                if (entries[i].Index != entries[0].Index + (ulong)i)
                {
                    throw new InvalidOperationException($"entries to append are not consecutive: {entries[i].Index} follows {entries[i - 1].Index}");
                }

                if (RaftRecordWriter.EntryRecordLength(entries[i].Data.Length) > _maxRecordLength)
                {
                    throw new ArgumentException($"entry {entries[i].Index} of {entries[i].Data.Length} bytes does not fit in a log page of {_geometry.PageSize} bytes");
                }
            }
        }

        var newCommit = hardState is { } hs && hs.Commit != _state.Commit ? hs.Commit : (ulong?)null;
        var commitsMembershipChange = newCommit is { } moved && CommitsConfChange(_state.Commit, moved);
        if (!installSnapshot && entries.Count == 0 && newCommit is null)
        {
            return;
        }

        if (installSnapshot)
        {
            _log.Enqueue(_writer.ForSnapshot(snapshot!));
        }

        _entryAddresses.Clear();
        for (var i = 0; i < entries.Count; i++)
        {
            _entryAddresses.Add(_log.Enqueue(_writer.ForEntry(entries[i])));
        }

        if (newCommit is { } commit)
        {
            _log.Enqueue(_writer.ForCommit(commit));
        }

        if (installSnapshot || entries.Count > 0 || commitsMembershipChange)
        {
            // Also makes any commit record written lazily before durable.
            FlushDurably();
        }

        // Otherwise a commit record alone stays in the log's memory until the next flush: nothing waits on it (see
        // IRaftStorage.Save), and a crash that loses it costs a restart only the entries it learns again. Not so when
        // it commits a membership change: a node that applied its removal of others, then restarted believing them
        // voters still, could need their votes after the operator shut them down.

        if (installSnapshot)
        {
            _state.ApplySnapshot(snapshot!);
        }

        if (entries.Count > 0)
        {
            _state.TruncateFrom(entries[0].Index);
            for (var i = 0; i < entries.Count; i++)
            {
                var entry = entries[i];
                _state.Add(entry.Term, entry.Type, _entryAddresses[i], RaftRecordWriter.EntryRecordLength(entry.Data.Length), entry.Data);
            }
        }

        if (newCommit is { } committed)
        {
            _state.Commit = committed;
        }

        if (installSnapshot)
        {
            CompactHead();
        }
    }

    /// <summary>True when an entry stored in (<paramref name="from"/>, <paramref name="to"/>] changes the membership.</summary>
    private bool CommitsConfChange(ulong from, ulong to)
    {
        var last = Math.Min(to, _state.LastIndex);
        for (var index = Math.Max(from, _state.CompactIndex) + 1; index <= last; index++)
        {
            if (_state.SlotAt(index).Type == EntryType.ConfChange)
            {
                return true;
            }
        }

        return false;
    }

    public void CreateSnapshot(SnapshotMetadata snapshot, ulong compactTo)
    {
        ThrowIfDisposed();
        if (!_state.CreateSnapshot(snapshot, compactTo))
        {
            return;
        }

        CompactHead();
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_log.FlushedUntilAddress < _log.TailAddress && (_device.WriteFailure ?? _commitManager.WriteFailure) is null)
        {
            // A commit record saved alone (lazily) reaches the disk on a clean close, so that a restart replays it.
            try
            {
                FlushDurably();
            }
            catch (StorageWriteException)
            {
                // The record is lost as in a crash; the write failure was or will be reported where it matters.
            }
        }

        _log.Dispose();
        _device.Dispose();
        _commitManager.Dispose();
        _readers.Dispose();
        if (_ownsMetadata)
        {
            _metadata.Dispose();
        }
    }

    /// <summary>
    /// After the compaction point moved: persist the replay base (durable before any record it summarises is
    /// deleted), then move FasterLog's head to the first retained entry so whole segments below it are freed.
    /// </summary>
    private void CompactHead()
    {
        _commitManager.PersistReplayBase(_state.ToReplayBase());
        _metadata.SaveMembership(_state.Snapshot.Index, _state.Snapshot.Membership);
        var newBegin = _state.FirstAddress ?? _log.TailAddress;
        if (newBegin > _log.BeginAddress)
        {
            _log.TruncateUntil(newBegin);
            CommitAndWait();
            _readers.ForgetBefore(_geometry.SegmentOf(newBegin));
        }

        StorageLog.Compacted(_logger, _state.CompactIndex, _state.Snapshot.Index, newBegin);
    }

    /// <summary>
    /// Makes everything enqueued durable. The device writes inline with O_SYNC, so once FasterLog has flushed up
    /// to the tail the records are on disk; the commit metadata FasterLog then writes is only a hint (see
    /// <see cref="DurableLogCommitManager"/>), so a Save does not wait for it. Normally the flush runs inside
    /// <see cref="FasterLog.Commit"/> on this thread; if another thread held FASTER's epoch, it runs when that
    /// thread leaves it, moments later.
    /// </summary>
    private void FlushDurably()
    {
        ThrowIfWriteFailed();
        _slowDisk.Delay();
        var tail = _log.TailAddress;
        _log.Commit(spinWait: false);
        ThrowIfWriteFailed();
        if (_log.FlushedUntilAddress >= tail)
        {
            return;
        }

        try
        {
            if (_options.CommitWait == CommitWaitMode.Spin)
            {
                var spinner = default(SpinWait);
                while (_log.FlushedUntilAddress < tail)
                {
                    ThrowIfWriteFailed(); // a failed write never advances the flushed address: do not spin for ever
                    spinner.SpinOnce();
                }
            }
            else
            {
                _log.WaitForCommitAsync(tail).AsTask().GetAwaiter().GetResult();
            }
        }
        catch (CommitFailureException)
        {
            ThrowIfWriteFailed();
            throw;
        }
    }

    /// <summary>A full FasterLog commit (its metadata included), for changes of the begin address (rare: when a snapshot moves the log's head, not per write).</summary>
    private void CommitAndWait() => FasterLogCommits.CommitAndWait(_log, ThrowIfWriteFailed);

    /// <summary>FasterLog reports a failed write as "error code 1", or not at all: name the cause (e.g. a full disk) instead.</summary>
    private void ThrowIfWriteFailed()
    {
        if ((_device.WriteFailure ?? _commitManager.WriteFailure) is { } failure)
        {
            throw new StorageWriteException($"the Raft log in {_geometry.Directory} could not be written durably: {failure.Message}", failure);
        }
    }

    private Entry ReadEntry(ulong index)
    {
        ref var slot = ref _state.SlotAt(index);
        if (slot.Cached)
        {
            return new Entry(index, slot.Term, slot.Type, slot.Data);
        }

        var record = new byte[slot.RecordLength];
        if (!_readers.TryRead(slot.Address + LogGeometry.EntryHeaderSize, record))
        {
            throw LogScanner.Corrupt(_geometry, slot.Address, $"entry {index} cannot be read (file missing or too short)");
        }

        var problem = RecordFrame.Validate(record);
        if (problem is null && (RaftRecordReader.Kind(record) != RaftRecordKind.Entry || RaftRecordReader.First(record) != index))
        {
            problem = $"expected entry {index}, found another record";
        }

        if (problem is not null)
        {
            throw LogScanner.Corrupt(_geometry, slot.Address, problem);
        }

        var payload = record.AsMemory(RecordFrame.Size + RaftRecordWriter.EntryBodyFixed);
        return new Entry(index, slot.Term, slot.Type, payload);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Rebuilds the state from the records on open, with the live path's rules.</summary>
    internal sealed class ReplayVisitor(RaftLogState state, LogGeometry geometry) : ILogRecordVisitor
    {
        // The term of the entry at the compaction point as the records read so far left it; null when none was read
        // since the point last moved, or a later record superseded it.
        private ulong? _termAtCompactIndex;

        public void Visit(long address, ReadOnlySpan<byte> record, bool committed)
        {
            switch (RaftRecordReader.Kind(record))
            {
                case RaftRecordKind.Entry:
                    var index = RaftRecordReader.First(record);
                    if (index <= state.CompactIndex)
                    {
                        // Written before the compaction recorded in the replay base: everything after it was
                        // superseded too, and is rewritten by the records that follow.
                        state.TruncateFrom(state.CompactIndex + 1);
                        _termAtCompactIndex = index == state.CompactIndex ? RaftRecordReader.Second(record) : null;
                        return;
                    }

                    if (index > state.LastIndex + 1)
                    {
                        throw LogScanner.Corrupt(geometry, address, $"entry {index} leaves a gap after {state.LastIndex}");
                    }

                    state.TruncateFrom(index);
                    state.Add(RaftRecordReader.Second(record), (EntryType)RecordFrame.SubType(record), address, record.Length, null);
                    break;
                case RaftRecordKind.Commit:
                    state.Commit = Math.Max(state.Commit, RaftRecordReader.First(record));
                    break;
                case RaftRecordKind.SnapshotInstalled:
                    var snapshot = RaftRecordReader.Snapshot(record);
                    if (snapshot.Index == state.Snapshot.Index && snapshot.Term == state.Snapshot.Term && snapshot.Index == state.CompactIndex)
                    {
                        // The install the replay base already records: its record lies past the log's begin only when
                        // a crash came before the head moved. Replay then read the suffix the install found, and keeps
                        // it only as the install did: when the entry at the snapshot's index had the snapshot's term.
                        if (_termAtCompactIndex is { } term && term != snapshot.Term)
                        {
                            state.TruncateFrom(state.CompactIndex + 1);
                        }
                    }
                    else if (state.ApplySnapshot(snapshot))
                    {
                        _termAtCompactIndex = null;
                    }

                    break;
                default:
                    throw LogScanner.Corrupt(geometry, address, $"unknown record kind {RecordFrame.Kind(record)}");
            }
        }
    }
}
