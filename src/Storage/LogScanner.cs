using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace Dcache.Storage;

/// <summary>Receives each intact record of a scan, in log order.</summary>
internal interface ILogRecordVisitor
{
    /// <param name="address">The FasterLog address of the entry (its 4-byte length header).</param>
    /// <param name="record">The record (frame and body); valid only during the call.</param>
    /// <param name="committed">Whether the record lies before the last recorded commit point.</param>
    void Visit(long address, ReadOnlySpan<byte> record, bool committed);
}

/// <summary>How a scan ended.</summary>
/// <param name="EndAddress">Just past the last intact record: where the log continues.</param>
/// <param name="LastCrc">The CRC of the last intact record (0 for an empty log): the next record chains to it.</param>
/// <param name="RecordCount">Intact records seen.</param>
/// <param name="TailRecordCount">Of those, how many lie after the recorded commit point.</param>
/// <param name="StopReason">Why the scan stopped after the commit point (null if it ended on zeros, the normal end).</param>
internal readonly record struct LogScanResult(long EndAddress, uint LastCrc, long RecordCount, long TailRecordCount, string? StopReason);

/// <summary>
/// Reads FasterLog's segment files directly, page by page, and checks every record's frame, checksum and chain.
/// Before <paramref name="committedUntil"/> (the last commit point FasterLog's metadata recorded) any defect is
/// corruption of acknowledged data and throws <see cref="StorageCorruptionException"/> naming the file and offset.
/// After it, records are taken for as long as they are intact and chained: FasterLog writes data with O_SYNC
/// before it records the commit point, so these are entries whose commit had reached the disk (or a prefix of
/// a batch that was being committed); the first defect there is a torn tail and ends the log silently, unless
/// anything was written past the page it lies in. Every write is synchronous and done before the next begins
/// (<see cref="SynchronousFileDevice"/>), and FasterLog writes a page, or part of one, at a time and in order, so
/// a power cut can damage only the last write, inside one page: a defect with data after its page is damage to
/// entries that were durable (and may have been acknowledged), and throws rather than cutting the log there.
/// </summary>
internal static class LogScanner
{
    public static LogScanResult Scan(LogGeometry geometry, long begin, long committedUntil, ILogRecordVisitor? visitor)
    {
        using var cursor = new LogCursor(geometry, begin, committedUntil);
        while (cursor.MoveNext())
        {
            visitor?.Visit(cursor.Address, cursor.Record.Span, cursor.Committed);
        }

        return cursor.Result;
    }

    /// <summary>
    /// Removes whatever lies on disk after <paramref name="end"/> (a torn or stale tail), so FasterLog, which
    /// resumes appending at <paramref name="end"/>, never has old bytes behind its new tail. Returns whether it
    /// had to change anything (then the change is durable when this returns).
    /// </summary>
    public static bool DiscardAfter(LogGeometry geometry, long end)
    {
        var changed = false;
        var segment = geometry.SegmentOf(end);
        var path = geometry.SegmentPath(segment);
        if (File.Exists(path))
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
            var offset = geometry.FileOffsetOf(end);
            var length = RandomAccess.GetLength(handle);
            if (length > offset)
            {
                var span = new byte[(int)Math.Min(length - offset, 2 * geometry.PageSize)];
                var read = RandomAccess.Read(handle, span, offset);
                if (span.AsSpan(0, read).ContainsAnyExcept((byte)0) || length - offset > span.Length)
                {
                    RandomAccess.SetLength(handle, offset);
                    NativeFileSync.DataSync(handle);
                    changed = true;
                }
            }
        }

        var removedLater = false;
        foreach (var later in ExistingSegments(geometry).Where(s => s > segment).ToList())
        {
            File.Delete(geometry.SegmentPath(later));
            removedLater = true;
        }

        if (removedLater)
        {
            NativeFileSync.SyncDirectory(geometry.Directory);
        }

        return changed || removedLater;
    }

    public static IEnumerable<int> ExistingSegments(LogGeometry geometry)
    {
        if (!Directory.Exists(geometry.Directory))
        {
            yield break;
        }

        var prefix = geometry.BaseName + ".";
        foreach (var file in Directory.EnumerateFiles(geometry.Directory, prefix + "*"))
        {
            var suffix = Path.GetFileName(file)[prefix.Length..];
            if (int.TryParse(suffix, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var segment))
            {
                yield return segment;
            }
        }
    }

    public static StorageCorruptionException Corrupt(LogGeometry geometry, long address, string problem) =>
        new(geometry.SegmentPath(geometry.SegmentOf(address)), geometry.FileOffsetOf(address), $"{problem} (log address {address})");
}

/// <summary>
/// Pulls the records of a log one at a time (see <see cref="LogScanner"/> for the rules). <see cref="Record"/> is
/// a view of the cursor's page buffer, valid until the next <see cref="MoveNext"/>. Optionally stops at
/// <paramref name="limit"/> (to read one snapshot out of the snapshot log).
/// </summary>
internal sealed class LogCursor(LogGeometry geometry, long begin, long committedUntil, long limit = long.MaxValue) : IDisposable
{
    private readonly byte[] _page = new byte[(int)geometry.PageSize];
    private readonly SegmentFileCache _segments = new(geometry);
    private long _loadedPageStart = -1;
    private long _address = begin;
    private long _endOfValid = begin;
    private uint _lastCrc;
    private bool _haveLast;
    private long _records;
    private long _tailRecords;
    private string? _stopReason;
    private bool _finished;

    public long Address { get; private set; }

    public ReadOnlyMemory<byte> Record { get; private set; }

    public bool Committed { get; private set; }

    public LogScanResult Result => new(_endOfValid, _lastCrc, _records, _tailRecords, _stopReason);

    /// <summary>Restarts the chain check at the next record (a snapshot's first record starts a new chain).</summary>
    public void ResetChain() => _haveLast = false;

    public bool MoveNext()
    {
        if (_finished)
        {
            return false;
        }

        var pageSize = _page.Length;
        while (_address < limit)
        {
            var pageStart = geometry.PageStartOf(_address);
            var committed = _address < committedUntil;
            if (pageStart != _loadedPageStart)
            {
                if (!_segments.TryReadPage(pageStart, _page) && committed)
                {
                    throw LogScanner.Corrupt(geometry, _address, "the segment file holding committed data is missing");
                }

                _loadedPageStart = pageStart;
            }

            var pos = (int)(_address - pageStart);
            if (pos + LogGeometry.EntryHeaderSize > pageSize)
            {
                _address = pageStart + pageSize; // too little room left for an entry: FasterLog moved to the next page
                continue;
            }

            var length = BinaryPrimitives.ReadInt32LittleEndian(_page.AsSpan(pos));
            if (length == 0)
            {
                // Zeros: either the unused end of a page (FasterLog skips to the next page when an entry does
                // not fit) or the end of the log. Padding never starts a page and is zero to the page's end.
                var nextPage = pageStart + pageSize;
                var padding = pos > 0 && !_page.AsSpan(pos).ContainsAnyExcept((byte)0);
                if (committed)
                {
                    if (!padding || committedUntil <= nextPage)
                    {
                        throw LogScanner.Corrupt(geometry, _address, $"no entry where the committed range (up to address {committedUntil}) continues");
                    }

                    _address = nextPage;
                    continue;
                }

                if (!padding)
                {
                    _stopReason = _page.AsSpan(pos).ContainsAnyExcept((byte)0) ? "non-zero bytes after an empty entry header" : null;
                    ThrowIfWrittenAfterPage(pageStart, _stopReason ?? "the log ends");
                    break;
                }

                _address = nextPage;
                continue;
            }

            if (length < RecordFrame.Size || pos + LogGeometry.AllocatedLength(length) > pageSize)
            {
                if (committed)
                {
                    throw LogScanner.Corrupt(geometry, _address, $"invalid entry length {length}");
                }

                _stopReason = $"invalid entry length {length}";
                ThrowIfWrittenAfterPage(pageStart, _stopReason);
                break;
            }

            var record = _page.AsMemory(pos + LogGeometry.EntryHeaderSize, length);
            var end = _address + LogGeometry.AllocatedLength(length);
            var problem = RecordFrame.Validate(record.Span);
            if (problem is null && _haveLast && RecordFrame.PreviousCrc(record.Span) != _lastCrc)
            {
                problem = "record does not chain to the record before it";
            }

            if (problem is null && committed && end > committedUntil)
            {
                problem = $"record crosses the committed end (address {committedUntil})";
            }

            if (problem is not null)
            {
                if (committed)
                {
                    throw LogScanner.Corrupt(geometry, _address, problem);
                }

                _stopReason = problem;
                ThrowIfWrittenAfterPage(pageStart, problem);
                break;
            }

            Address = _address;
            Record = record;
            Committed = committed;
            _lastCrc = RecordFrame.StoredCrc(record.Span);
            _haveLast = true;
            _records++;
            if (!committed)
            {
                _tailRecords++;
            }

            _address = end;
            _endOfValid = end;
            return true;
        }

        _finished = true;
        return false;
    }

    private void ThrowIfWrittenAfterPage(long pageStart, string problem)
    {
        var after = pageStart + _page.Length;
        if (after < limit && _segments.FirstDataAtOrAfter(after) is { } written)
        {
            throw LogScanner.Corrupt(geometry, _address,
                $"{problem}, yet data was written after its page (at log address {written}): not a torn write, which damages only the last page written");
        }
    }

    public void Dispose() => _segments.Dispose();
}

/// <summary>Read handles on segment files, opened on first use. Not thread-safe.</summary>
internal sealed class SegmentFileCache(LogGeometry geometry) : IDisposable
{
    private readonly Dictionary<int, SafeFileHandle?> _handles = [];

    public LogGeometry Geometry => geometry;

    /// <summary>Reads the page starting at <paramref name="pageStart"/>; bytes past the end of the file read as zeros. False if the segment file does not exist.</summary>
    public bool TryReadPage(long pageStart, byte[] page)
    {
        Array.Clear(page);
        var handle = Get(geometry.SegmentOf(pageStart));
        if (handle is null)
        {
            return false;
        }

        var offset = geometry.FileOffsetOf(pageStart);
        var filled = 0;
        while (filled < page.Length)
        {
            var read = RandomAccess.Read(handle, page.AsSpan(filled), offset + filled);
            if (read == 0)
            {
                break;
            }

            filled += read;
        }

        return true;
    }

    /// <summary>Reads exactly <paramref name="into"/>.Length bytes at <paramref name="address"/>; false if the file is missing or too short.</summary>
    public bool TryRead(long address, Span<byte> into)
    {
        var handle = Get(geometry.SegmentOf(address));
        if (handle is null)
        {
            return false;
        }

        var offset = geometry.FileOffsetOf(address);
        var filled = 0;
        while (filled < into.Length)
        {
            var read = RandomAccess.Read(handle, into[filled..], offset + filled);
            if (read == 0)
            {
                return false;
            }

            filled += read;
        }

        return true;
    }

    /// <summary>The log address of the first non-zero byte at or after <paramref name="address"/> in this segment file or any later one, or null.</summary>
    public long? FirstDataAtOrAfter(long address)
    {
        var buffer = new byte[64 * 1024];
        var first = geometry.SegmentOf(address);
        foreach (var segment in LogScanner.ExistingSegments(geometry).Where(s => s >= first).Order())
        {
            var handle = Get(segment);
            if (handle is null)
            {
                continue;
            }

            var segmentStart = (long)segment << geometry.SegmentSizeBits;
            var offset = segment == first ? geometry.FileOffsetOf(address) : 0;
            int read;
            while ((read = RandomAccess.Read(handle, buffer, offset)) > 0)
            {
                var at = buffer.AsSpan(0, read).IndexOfAnyExcept((byte)0);
                if (at >= 0)
                {
                    return segmentStart + offset + at;
                }

                offset += read;
            }
        }

        return null;
    }

    /// <summary>Closes handles on segments before <paramref name="segment"/> (deleted by head truncation).</summary>
    public void ForgetBefore(int segment)
    {
        foreach (var key in _handles.Keys.Where(k => k < segment).ToList())
        {
            _handles[key]?.Dispose();
            _handles.Remove(key);
        }
    }

    public void Dispose()
    {
        foreach (var handle in _handles.Values)
        {
            handle?.Dispose();
        }

        _handles.Clear();
    }

    private SafeFileHandle? Get(int segment)
    {
        if (_handles.TryGetValue(segment, out var handle) && handle is not null)
        {
            return handle;
        }

        var path = geometry.SegmentPath(segment);
        handle = File.Exists(path) ? File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete) : null;
        if (handle is not null)
        {
            _handles[segment] = handle;
        }

        return handle;
    }
}
