using System.Collections.Concurrent;
using FASTER.core;
using Microsoft.Win32.SafeHandles;

namespace Dcache.Storage;

/// <summary>
/// FasterLog's storage device, replaced. Why: on Linux FASTER's managed device issues every write as a .NET async
/// file write, which runs the blocking O_SYNC pwrite on a thread-pool thread and completes through another; under
/// load (hundreds of proposals completing per batch) the write waits in the pool's queue behind them, and a 0.2 ms
/// disk write became a 5 ms commit. This device writes inline, on the thread that asks FasterLog to flush (the Raft
/// driver), with O_SYNC, and completes synchronously, as FASTER's own in-memory devices do. Reads are synchronous
/// too (FasterLog reads only its tail page, on recovery). Files are named like the managed device's
/// (<c>{BasePath}.{segment}</c>) and a new segment file's directory entry is fsynced before the first write to it
/// completes, so a commit never depends on a file name that a power cut could lose.
/// </summary>
internal sealed class SynchronousFileDevice : StorageDeviceBase
{
    private readonly LogGeometry _geometry;
    private readonly ConcurrentDictionary<int, SafeFileHandle> _handles = new();
    private readonly Lock _createGate = new();

    public SynchronousFileDevice(LogGeometry geometry)
        : base(geometry.BasePath, 512, Devices.CAPACITY_UNSPECIFIED)
    {
        _geometry = geometry;
        var existing = LogScanner.ExistingSegments(geometry).ToList();
        if (existing.Count > 0)
        {
            // Tells FASTER which segment files exist, so head truncation deletes from the right one.
            startSegment = existing.Min();
            endSegment = existing.Max();
        }
    }

    /// <summary>
    /// The first write that failed (a full disk, an I/O error), or null. FasterLog only learns "error 1" from the
    /// callback; the log's owner reads the cause here. After a failure every later write fails too: what FasterLog
    /// believes is on disk is then uncertain, so the log must not be written again until it is reopened.
    /// </summary>
    public IOException? WriteFailure => Volatile.Read(ref _writeFailure);

    private IOException? _writeFailure;

    public override unsafe void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context)
    {
        uint error = 0;
        if (WriteFailure is not null)
        {
            error = 1;
        }
        else
        {
            try
            {
                var source = new ReadOnlySpan<byte>((void*)sourceAddress, (int)numBytesToWrite);
                RandomAccess.Write(Handle(segmentId), source, (long)destinationAddress);
            }
            catch (IOException ex)
            {
                Interlocked.CompareExchange(ref _writeFailure, ex, null);
                error = 1;
            }
        }

        callback(error, error == 0 ? numBytesToWrite : 0, context);
    }

    public override unsafe void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context)
    {
        uint error = 0;
        var total = 0;
        try
        {
            var destination = new Span<byte>((void*)destinationAddress, (int)readLength);
            var handle = Handle(segmentId);
            while (total < destination.Length)
            {
                var read = RandomAccess.Read(handle, destination[total..], (long)sourceAddress + total);
                if (read == 0)
                {
                    break;
                }

                total += read;
            }
        }
        catch (IOException)
        {
            error = 1;
        }

        callback(error, (uint)total, context);
    }

    public override void RemoveSegment(int segment)
    {
        if (_handles.TryRemove(segment, out var handle))
        {
            handle.Dispose();
        }

        File.Delete(_geometry.SegmentPath(segment));
        NativeFileSync.SyncDirectory(_geometry.Directory);
    }

    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        RemoveSegment(segment);
        callback(result);
    }

    public override long GetFileSize(int segment) => segmentSize > 0 ? segmentSize : RandomAccess.GetLength(Handle(segment));

    public override void Dispose()
    {
        foreach (var handle in _handles.Values)
        {
            handle.Dispose();
        }

        _handles.Clear();
    }

    private SafeFileHandle Handle(int segment)
    {
        if (_handles.TryGetValue(segment, out var handle))
        {
            return handle;
        }

        lock (_createGate)
        {
            if (_handles.TryGetValue(segment, out handle))
            {
                return handle;
            }

            var path = _geometry.SegmentPath(segment);
            var created = !File.Exists(path);
            // WriteThrough is O_SYNC: each write is on the disk (data and the size it implies) when it returns.
            handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete, FileOptions.WriteThrough);
            if (created)
            {
                NativeFileSync.SyncDirectory(_geometry.Directory);
            }

            _handles[segment] = handle;
            return handle;
        }
    }
}
